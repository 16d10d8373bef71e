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
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx

from bench.gateway import gateway_world, memory_kib, percentile, run_bench
from bench.pipeline import say
from services.gateway import emails, passwords

PASSWORD = "bench password 42"
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


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    async with gateway_world("logins") as world:
        addresses = await seed(world.pool, options.clients)
        say(f"{options.clients} students log in at once, {options.rounds} time(s)")
        return await storm(world.base_url, addresses, options.rounds, world.pid)


def main() -> None:
    options = parse_options()
    run_bench(lambda: bench(options))


if __name__ == "__main__":
    main()
