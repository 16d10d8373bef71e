"""Live updates (SSE) at scale on one gateway process: memory per idle stream, delivery latency, errors.

`python -m bench.gateway_sse [--connections 1000] [--per-user 5] [--updates 10]`

Builds a throwaway world on the local servers (its own database and NATS namespace), starts one gateway
process, logs in `connections / per-user` students who all watch one section, opens `per-user` streams
for each, then publishes `--updates` section updates (one a second) the way the detector does and times
their arrival on every stream. Then the limits: one stream more than SSE_MAX_CONNECTIONS is refused with
503 and Retry-After, and a student's logout ends that student's streams. The last line of stdout is
`RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from contextlib import suppress
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from nats.aio.client import Client

from bench.gateway import gateway_world, memory_kib, network_of, percentile, run_bench
from bench.pipeline import BenchError, say
from services.gateway.passwords import hash_password
from shared.events import SectionLive, SectionState, encode
from shared.streams import Topology

TERM, CLASS_NBR = "2271", "10001"
PASSWORD = "bench password 42"
OPEN_SECONDS = 120.0
DELIVERY_SECONDS = 10.0
LOGOUT_SECONDS = 10.0


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_sse", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="live streams to hold open")
    parser.add_argument("--per-user", type=int, default=5, help="streams per student (SSE_MAX_PER_USER)")
    parser.add_argument("--updates", type=int, default=10, help="section updates to time, one a second")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 20_000 or not 1 <= args.per_user <= 100 or not 1 <= args.updates <= 600:
        parser.error("--connections 1..20000, --per-user 1..100, --updates 1..600")
    return args


class Tally:
    """How many streams have each update: an event per update, set when every stream has it."""

    def __init__(self, streams: int) -> None:
        self._streams = streams
        self._counts: dict[float, int] = {}
        self._complete: dict[float, asyncio.Event] = {}

    def complete(self, sent: float) -> asyncio.Event:
        return self._complete.setdefault(sent, asyncio.Event())

    def arrived(self, sent: float) -> None:
        self._counts[sent] = self._counts.get(sent, 0) + 1
        if self._counts[sent] >= self._streams:
            self.complete(sent).set()


class Stream:
    """One open `GET /api/v1/events`, recording when each section update arrived."""

    def __init__(self, client: httpx.AsyncClient, tally: Tally) -> None:
        self.client = client
        self.tally = tally
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.arrivals: dict[float, float] = {}
        self.status = 0
        self.error = ""
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", "/api/v1/events") as response:
                self.status = response.status_code
                if response.status_code != 200:
                    return
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:") and event == "ready":
                        self.ready.set()
                    elif line.startswith("data:") and event == "section":
                        data = json.loads(line.removeprefix("data:"))
                        # The update's checked_at (when the bench published it), as the API shows it.
                        sent = round(datetime.fromisoformat(data["checked_at"]).timestamp(), 6)
                        self.arrivals[sent] = time.time()
                        self.tally.arrived(sent)
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            self.ended.set()


async def seed(pool: asyncpg.Pool, students: int) -> list[str]:
    """Verified students who all watch one section; returns their addresses."""
    password_hash = await asyncio.to_thread(hash_password, PASSWORD)
    emails = [f"sse{n}@bench.example.edu" for n in range(students)]
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO app_user (email, password_hash, email_verified)"
            " SELECT e, $2, true FROM unnest($1::text[]) AS e RETURNING id",
            emails,
            password_hash,
        )
        await conn.copy_records_to_table(
            "watch",
            records=[(row["id"], TERM, CLASS_NBR) for row in rows],
            columns=["user_id", "term", "class_nbr"],
        )
    return emails


async def log_in(base_url: str, email: str, address: str) -> httpx.AsyncClient:
    # Each student from an address of its own (the gateway trusts the bench as its proxy): the per-network
    # login throttle is for guessers, not for this many students behind one machine.
    client = httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(10.0, read=None),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        headers={"X-Forwarded-For": address},
    )
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    if response.status_code != 200:
        await client.aclose()
        raise BenchError(f"login of {email} answered {response.status_code}: {response.text[:200]}")
    return client


def update(now: float) -> SectionLive:
    state = SectionState(
        term=TERM,
        class_nbr=CLASS_NBR,
        subject="CSE",
        catalog_nbr="310",
        title="Data Structures and Algorithms",
        enrl_cap=100,
        enrl_tot=99,
        open_seats=1,
    )
    return SectionLive(checked_at=now, state=state, term=TERM, class_nbr=CLASS_NBR, found=True)


async def wait_for(event: asyncio.Event, seconds: float) -> bool:
    with suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
        return True
    return False


async def measure(
    options: argparse.Namespace, base_url: str, pid: int, pool: asyncpg.Pool, nc: Client, topology: Topology
) -> dict[str, Any]:
    students = math.ceil(options.connections / options.per_user)
    emails = await seed(pool, students)
    say(f"{students} students watching {TERM}/{CLASS_NBR}, {options.per_user} streams each")
    clients = []
    for index, email in enumerate(emails):
        clients.append(await log_in(base_url, email, network_of(index)))
    rss_before = memory_kib(pid)["VmRSS"]
    opened = time.monotonic()
    pairs = [(client, n) for client in clients for n in range(options.per_user)][: options.connections]
    tally = Tally(len(pairs))
    streams = [Stream(client, tally) for client, _ in pairs]
    for done, stream in enumerate(streams, 1):
        if not await wait_for(stream.ready, OPEN_SECONDS):
            raise BenchError(f"stream {done} not ready after {OPEN_SECONDS:.0f} s")
        if done % 250 == 0 or done == len(streams):
            say(f"  streams open: {done}/{len(streams)}")
    open_seconds = time.monotonic() - opened
    refused_open = [stream for stream in streams if stream.status != 200 or stream.error]
    # Idle for a moment so the memory read is of idle streams, not of their set-up.
    await asyncio.sleep(2)
    rss_open = memory_kib(pid)["VmRSS"]
    per_stream_kib = (rss_open - rss_before) / len(streams)
    say(f"  {len(streams)} open in {open_seconds:.1f} s; gateway RSS {rss_before} → {rss_open} KiB")

    latencies: list[float] = []
    missed = 0
    for _ in range(options.updates):
        sent = round(time.time(), 6)
        await nc.publish(topology.live_section_subject(TERM, CLASS_NBR), encode(update(sent)))
        await nc.flush()
        await wait_for(tally.complete(sent), DELIVERY_SECONDS)
        for stream in streams:
            arrival = stream.arrivals.get(sent)
            if arrival is None:
                missed += 1
            else:
                latencies.append(arrival - sent)
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - sent)))
    p50, p99 = (percentile(latencies, share) * 1000 for share in (0.5, 0.99))
    say(
        f"  {options.updates} updates to {len(streams)} streams:"
        f" p50 {p50:.0f} ms, p99 {p99:.0f} ms, missed {missed}"
    )

    # One more than the process allows: refused with Retry-After, not a 500.
    async with httpx.AsyncClient(base_url=base_url, timeout=5, headers=clients[0].headers) as extra:
        extra.cookies = clients[-1].cookies
        async with extra.stream("GET", "/api/v1/events") as response:
            over_cap = (response.status_code, response.headers.get("retry-after"))
    say(f"  stream {len(streams) + 1}: {over_cap[0]} (Retry-After {over_cap[1]})")

    # A logout ends that student's streams.
    student = clients[0]
    own = [stream for stream in streams if stream.client is student]
    logged_out = time.monotonic()
    response = await student.post("/api/v1/auth/logout", headers={"content-type": "application/json"})
    ended = all([await wait_for(stream.ended, LOGOUT_SECONDS) for stream in own])
    logout_seconds = time.monotonic() - logged_out
    say(f"  logout ({response.status_code}) ended its {len(own)} streams: {ended} in {logout_seconds:.2f} s")

    rss_peak = memory_kib(pid)["VmHWM"]
    for stream in streams:
        stream.task.cancel()
    await asyncio.gather(*(stream.task for stream in streams), return_exceptions=True)
    for client in clients:
        await client.aclose()
    return {
        "connections": len(streams),
        "students": students,
        "open_seconds": round(open_seconds, 2),
        "open_errors": len(refused_open),
        "rss_before_kib": rss_before,
        "rss_open_kib": rss_open,
        "rss_peak_kib": rss_peak,
        "kib_per_idle_stream": round(per_stream_kib, 1),
        "updates": options.updates,
        "deliveries": len(latencies),
        "missed": missed,
        "delivery_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "delivery_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "delivery_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "over_cap_status": over_cap[0],
        "over_cap_retry_after": over_cap[1],
        "logout_ended_streams": ended,
        "logout_seconds": round(logout_seconds, 2),
    }


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    env = {"SSE_MAX_CONNECTIONS": str(options.connections), "SSE_MAX_PER_USER": str(options.per_user)}
    async with gateway_world("sse", env) as world:
        return await measure(options, world.base_url, world.pid, world.pool, world.nc, world.topology)


def main() -> None:
    options = parse_options()
    run_bench(lambda: bench(options))


if __name__ == "__main__":
    main()
