"""The running system shared by the end-to-end tests of this folder."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from devtools import catalog_sim, resend_fake
from shared.db import with_database
from shared.messaging import connect_nats
from shared.streams import Topology, declare
from tests.e2e.system import SERVICES, System, World, system_env
from tests.infra import Servers

# A short ack wait so that the crash test sees its redelivery in seconds, not the default 30 s.
NOTIFIER_ACK_WAIT = 4.0


@pytest.fixture(scope="module")
async def world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    namespace = f"e{uuid.uuid4().hex[:10]}"
    database = f"pmc_e2e_{uuid.uuid4().hex[:10]}"
    database_url = with_database(servers.database_url, database)
    async with catalog_sim.serve() as api_url, resend_fake.serve() as resend_url:
        env, gateway_url = system_env(
            nats_url=servers.nats_url,
            database_url=database_url,
            redis_url=servers.redis_url,
            namespace=namespace,
            asu_api_url=api_url,
            resend_url=resend_url,
        )
        system = System(env=env, logs=Path(tmp_path_factory.mktemp("logs")), gateway_url=gateway_url)
        system.run_setup()
        topology = Topology(namespace, 1)
        nc = await connect_nats(servers.nats_url, "e2e")
        await declare(nc.jetstream(), topology, (topology.notifier_consumer(ack_wait=NOTIFIER_ACK_WAIT),))
        for name in SERVICES:
            system.start(name)
        try:
            await system.wait_ready()
            async with httpx.AsyncClient(base_url=api_url.split("/catalog-microservices")[0]) as catalog:
                yield World(system, catalog, resend_url, topology, database_url)
            codes = await system.stop_all()
            assert codes == dict.fromkeys(codes, 0), f"unclean shutdown {codes}\n{system.log_tails()}"
        finally:
            await system.stop_all()
            print(system.log_tails())
            for stream in topology.streams:
                await nc.jetstream().delete_stream(stream.name)
            await nc.close()
            admin = await asyncpg.connect(servers.database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
