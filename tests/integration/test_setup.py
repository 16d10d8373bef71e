from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from shared.db import migrate, migration_files
from shared.streams import Topology, declare


async def test_migrations_are_recorded_and_not_reapplied(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        assert await migrate(conn) == []
        versions = [row["version"] for row in await conn.fetch("SELECT version FROM schema_migration")]
    assert versions == [version for version, _ in migration_files()]


async def test_declare_creates_streams_and_updates_consumers(
    js: JetStreamContext, topology: Topology
) -> None:
    for stream in topology.streams:
        info = await js.stream_info(stream.name)
        assert info.config.subjects == list(stream.subjects)
    changed = Topology(topology.namespace, topology.check_interval_seconds)
    notifier = changed.notifier_consumer(ack_wait=12.0)
    await declare(js, changed, consumers=(notifier,))
    info = await js.consumer_info(notifier.stream, notifier.durable)
    assert info.config.ack_wait == 12.0
