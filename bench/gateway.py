"""What the gateway benches share: a throwaway world around one gateway process, and how they read it.

The world is its own database, NATS namespace and Redis keys on the local servers (NATS_URL, DATABASE_URL,
REDIS_URL), with one gateway started as deployed (`python -m services.gateway`) that trusts the bench as
its proxy, so each simulated student can come from an address of its own. Everything is removed at the
end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as redis
from nats.aio.client import Client

from bench.pipeline import (
    BenchError,
    Processes,
    connect,
    local_servers,
    run_setup,
    say,
    service_env,
)
from devtools.net import free_port
from shared.db import create_pool, with_database
from shared.streams import Topology

START_SECONDS = 30.0


@dataclass(frozen=True)
class GatewayWorld:
    base_url: str
    # The gateway process, for its memory.
    pid: int
    pool: asyncpg.Pool
    nc: Client
    topology: Topology


def memory_kib(pid: int) -> dict[str, int]:
    """Resident memory of a process now (VmRSS) and at its peak (VmHWM), in KiB, from /proc."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def network_of(index: int) -> str:
    """A client address of its own for the index-th student (the gateway believes the bench's header)."""
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"


async def wait_gateway(base_url: str, processes: Processes) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() - started < START_SECONDS:
            processes.check_alive()
            with suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise BenchError(f"the gateway is not ready after {START_SECONDS:.0f} s\n{processes.log_tails()}")


async def forget_redis_keys(redis_url: str, namespace: str) -> None:
    client: redis.Redis = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def gateway_world(name: str, env: dict[str, str] | None = None) -> AsyncIterator[GatewayWorld]:
    """A throwaway world named after the bench `name`, its gateway started with `env` on top."""
    nats_url, server_url, redis_url = local_servers()
    tag = secrets.token_hex(5)
    namespace, database = f"g{tag}", f"pmc_bench_{name}_{tag}"
    database_url = with_database(server_url, database)
    topology = Topology(namespace, 300)
    nc = await connect(nats_url)
    logs = Path(tempfile.mkdtemp(prefix=f"pmc-bench-{name}-"))
    port = free_port()
    service = service_env(nats_url, database_url, redis_url, namespace, "http://127.0.0.1:9/unused", "")
    service.update(GATEWAY_PORT=str(port), TRUSTED_PROXIES="127.0.0.1", LOG_LEVEL="warning", **(env or {}))
    processes = Processes(logs, service)
    pool: asyncpg.Pool | None = None
    say(f"namespace {namespace}, database {database}, gateway log in {logs}")
    try:
        await run_setup(service)
        pool = await create_pool(database_url)
        await processes.start("gateway", "services.gateway")
        base_url = f"http://127.0.0.1:{port}"
        await wait_gateway(base_url, processes)
        yield GatewayWorld(base_url, processes.pids()["gateway"], pool, nc, topology)
    finally:
        await processes.stop_all()
        if pool is not None:
            await pool.close()
        js = nc.jetstream()
        for stream in topology.streams:
            with suppress(Exception):
                await js.delete_stream(stream.name)
        await nc.close()
        await forget_redis_keys(redis_url, namespace)
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


def run_bench(bench: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """Run a bench; its numbers as the last line `RESULT {json}`, or one line saying why it stopped."""
    try:
        result = asyncio.run(bench())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
