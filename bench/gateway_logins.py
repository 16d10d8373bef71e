"""A log-in storm on one gateway process: latency, errors and memory while argon2id hashing is bounded.

`python -m bench.gateway_logins [--clients 50] [--rounds 1]`

Builds a throwaway world on the local servers (its own database and NATS namespace), seeds `--clients`
verified students, starts one gateway process (`python -m services.gateway`, as deployed), then has every
student log in at the same moment with the right password, `--rounds` times. Each student comes from an
address of its own (the gateway trusts the bench as its proxy), as students do; the per-network throttle is
for guessers. Reports the latency of each log-in (p50, p99, max), the answers that were not 200, and the
gateway's resident memory before the storm and at its peak (VmRSS, VmHWM from /proc). Everything it
created is removed at the end. The last line of stdout is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as redis

from bench.pipeline import (
    DEFAULT_DATABASE_URL,
    DEFAULT_NATS_URL,
    DEFAULT_REDIS_URL,
    BenchError,
    Processes,
    connect,
    require_reachable,
    run_setup,
    say,
    service_env,
)
from devtools.net import free_port
from services.gateway import emails, passwords
from shared.db import create_pool, with_database
from shared.streams import Topology

PASSWORD = "bench password 42"
START_SECONDS = 30.0
LOGIN_TIMEOUT_SECONDS = 60.0


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway_logins", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=50, help="students logging in at the same moment")
    parser.add_argument("--rounds", type=int, default=1, help="storms, one after the other")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 2000 or not 1 <= args.rounds <= 20:
        parser.error("--clients 1..2000, --rounds 1..20")
    return args


def memory_kib(pid: int) -> dict[str, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM) of a process, in KiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


async def seed(pool: asyncpg.Pool, students: int) -> list[str]:
    """Verified students, each with a hash of their own (as after registration); their addresses."""
    addresses = [f"storm{n}@bench.example.edu" for n in range(students)]
    hashes = await asyncio.gather(*(passwords.hash_async(PASSWORD) for _ in addresses))
    await pool.executemany(
        "INSERT INTO app_user (email, email_canonical, password_hash, email_verified)"
        " VALUES ($1, $2, $3, true)",
        [
            (address, emails.canonical(address), hashed)
            for address, hashed in zip(addresses, hashes, strict=True)
        ],
    )
    return addresses


async def log_in(client: httpx.AsyncClient, address: str, network: str) -> tuple[float, int | str]:
    started = time.perf_counter()
    try:
        response = await client.post(
            "/api/v1/auth/login",
            json={"email": address, "password": PASSWORD},
            headers={"X-Forwarded-For": network},
        )
        outcome: int | str = response.status_code
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - started, outcome


async def storm(base_url: str, addresses: list[str], rounds: int, pid: int) -> dict[str, Any]:
    before = memory_kib(pid)
    latencies: list[float] = []
    outcomes: Counter[int | str] = Counter()
    limits = httpx.Limits(max_connections=len(addresses), max_keepalive_connections=0)
    wall = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=LOGIN_TIMEOUT_SECONDS, limits=limits) as client:
        for round_ in range(rounds):
            results = await asyncio.gather(
                *(
                    log_in(client, address, f"10.{round_}.{n // 250}.{n % 250 + 1}")
                    for n, address in enumerate(addresses)
                )
            )
            for seconds, outcome in results:
                latencies.append(seconds)
                outcomes[outcome] += 1
    wall = time.perf_counter() - wall
    after = memory_kib(pid)
    errors = {str(outcome): count for outcome, count in outcomes.items() if outcome != 200}
    return {
        "clients": len(addresses),
        "rounds": rounds,
        "logins": len(latencies),
        "ok": outcomes[200],
        "errors": errors,
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies) * 1000, 1),
        "wall_seconds": round(wall, 2),
        "logins_per_second": round(len(latencies) / wall, 1),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "rss_peak_before_mib": round(before["VmHWM"] / 1024, 1),
        "rss_after_mib": round(after["VmRSS"] / 1024, 1),
        "rss_peak_mib": round(after["VmHWM"] / 1024, 1),
        "argon2": {
            "time_cost": passwords.TIME_COST,
            "memory_mib": passwords.MEMORY_KIB // 1024,
            "parallelism": passwords.PARALLELISM,
            "at_once": passwords.CONCURRENT_HASHES,
        },
    }


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


@contextlib.asynccontextmanager
async def world(clients: int) -> AsyncIterator[tuple[str, int, list[str]]]:
    nats_url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    require_reachable("NATS", nats_url, "NATS_URL")
    require_reachable("PostgreSQL", server_url, "DATABASE_URL")
    require_reachable("Redis", redis_url, "REDIS_URL")
    tag = secrets.token_hex(5)
    namespace, database = f"l{tag}", f"pmc_bench_logins_{tag}"
    database_url = with_database(server_url, database)
    topology = Topology(namespace, 300)
    nc = await connect(nats_url)
    logs = Path(tempfile.mkdtemp(prefix="pmc-bench-logins-"))
    port = free_port()
    env = service_env(nats_url, database_url, redis_url, namespace, "http://127.0.0.1:9/unused", "")
    env.update(GATEWAY_PORT=str(port), TRUSTED_PROXIES="127.0.0.1", LOG_LEVEL="warning")
    processes = Processes(logs, env)
    pool: asyncpg.Pool | None = None
    say(f"namespace {namespace}, database {database}, gateway log in {logs}")
    try:
        await run_setup(env)
        pool = await create_pool(database_url)
        addresses = await seed(pool, clients)
        await processes.start("gateway", "services.gateway")
        base_url = f"http://127.0.0.1:{port}"
        await wait_gateway(base_url, processes)
        yield base_url, processes.pids()["gateway"], addresses
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


async def forget_redis_keys(redis_url: str, namespace: str) -> None:
    client: redis.Redis = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    async with world(options.clients) as (base_url, pid, addresses):
        say(f"{options.clients} students log in at once, {options.rounds} time(s)")
        return await storm(base_url, addresses, options.rounds, pid)


def main() -> None:
    options = parse_options()
    try:
        result = asyncio.run(bench(options))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
