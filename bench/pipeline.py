"""One check cycle through the whole pipeline at the original system's scale.

`python -m bench.pipeline [--sections 6250] [--watchers-per-section 4] [--open-fraction 0.1] [--scrapers 2]`

Builds a throwaway world on the local servers (its own database, NATS namespace and catalog simulator),
seeds full sections spread over courses as students spread them (a few popular courses with many
watched sections, many courses with one) and their watchers, starts scraper, detector and notifier as
processes, then drives scheduler cycles in this process with the `Scheduler` class the scheduler service
runs:

1. first sight: every section is looked up by class number and stored, and nobody is emailed;
2. after seats open in a fraction of the sections: one search per course, every watcher of those
   sections gets one email; prints the class-search requests per watched section;
3. the provider's ceiling: a backlog of emails drained at the pace the provider allows;
4. the request budget: scrapers restarted with the production budget (ASU_REQUESTS_PER_MINUTE) face more
   checks than it allows; prints the most requests the simulator saw in any 60 s.

Everything it created is removed at the end, whatever happened. The last line of stdout is
`RESULT {json}` for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devtools import resend_fake
from devtools.catalog_sim.app import API_PREFIX
from devtools.net import answers, free_port
from services.scheduler.app import CycleResult, Scheduler
from services.scheduler.sections import WATCHED_SECTIONS
from shared.db import create_pool, with_database
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, redact_url
from shared.streams import Consumer, Topology

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TERM = "2271"
# The production default, so the streams are declared exactly as in production. No scheduler process
# runs (the bench drives cycles itself), so the interval only numbers windows.
INTERVAL = 300
# The original system: 25,000 watches from 10,000 users.
WATCHES_PER_USER = 2.5
# Watched class numbers are 10000 + 10*i: each has a four-digit prefix of its own, so the simulator's fuzzy
# search (neighbours sharing the first four digits) answers few rows per lookup. Unwatched sections of the
# same courses are 10000 + 10*j + 5.
MAX_SECTIONS = 9000
# How watched sections spread over courses, repeated: one popular course with 15 watched sections, two
# with 3, four with 1 (25 sections in 7 courses), each course also listing unwatched sections.
COURSE_PATTERN = ((15, 10), (3, 3), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
# Throughput phases must not wait for the production budget; the budget phase restores it.
UNLIMITED_REQUESTS_PER_MINUTE = 10_000_000
BUDGET_PER_MINUTE = 600
BUDGET_WINDOW_SECONDS = 60.0
# The budget phase watches the source this long: more than one window, so the busiest one is a full one.
BUDGET_PHASE_SECONDS = 75.0
HTTP_CONCURRENCY = 32
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 5.0
# After the last expected email: long enough for a stray redelivery or duplicate change to show up.
QUIET_SECONDS = 5.0
STOP_SECONDS = 15.0
START_SECONDS = 30.0
# Emails the provider accepted, whichever backend: the notifier records each acceptance on its claim.
SENT_EMAILS = "SELECT count(*) FROM notification WHERE sent_at IS NOT NULL"
MAX_EMAILS_PER_CALL = 100
# The provider-ceiling phase: enough emails for 40 full provider calls (20 s at Resend's default limit).
CEILING_EMAILS = 4000
# The scheduler's only query per cycle is `WATCHED_SECTIONS` (services/scheduler/sections.py).
SCHEDULER_QUERIES_PER_CYCLE = 1
_SETTING_VARIABLES = frozenset(name.upper() for name in Settings.__struct_fields__)
_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


@dataclass(frozen=True)
class Options:
    sections: int
    watchers_per_section: int
    open_fraction: float
    scrapers: int
    # Requests per second the Resend fake allows (its ceiling is this times 100 emails); 0: the outbox.
    provider_rps: int


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--sections", type=int, default=6250, help="distinct watched sections")
    parser.add_argument("--watchers-per-section", type=int, default=4)
    parser.add_argument("--open-fraction", type=float, default=0.1, help="share of sections that open")
    parser.add_argument("--scrapers", type=int, default=2, help="scraper replicas")
    parser.add_argument(
        "--provider-rps",
        type=int,
        default=2,
        help="the Resend fake allows this many requests/s (Resend's default: 2); 0: emails to the outbox",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.sections <= MAX_SECTIONS:
        parser.error(f"--sections must be 1 to {MAX_SECTIONS}")
    if args.watchers_per_section < 1 or args.scrapers < 1:
        parser.error("--watchers-per-section and --scrapers must be at least 1")
    if not 0 < args.open_fraction <= 1:
        parser.error("--open-fraction must be in (0, 1]")
    if args.provider_rps < 0:
        parser.error("--provider-rps must be 0 or more")
    return Options(
        args.sections, args.watchers_per_section, args.open_fraction, args.scrapers, args.provider_rps
    )


def say(line: str) -> None:
    print(line, flush=True)


def require_reachable(what: str, url: str, variable: str) -> None:
    if not answers(url, timeout=2):
        raise BenchError(f"{what} does not answer at {redact_url(url)}: start it or set {variable}")


# CPU accounting from /proc, to show which process a phase was bound by.


def process_cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th of the line.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


@dataclass(frozen=True)
class CpuSample:
    wall: float
    processes: dict[str, float]
    machine_busy: float
    machine_total: float


def sample_cpu(pids: dict[str, int]) -> CpuSample:
    busy, total = machine_cpu_seconds()
    processes = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    return CpuSample(time.monotonic(), processes, busy, total)


def cpu_usage(before: CpuSample, after: CpuSample) -> dict[str, int]:
    """Percent of one core per process over the interval, the rest of the machine (PostgreSQL, NATS,
    anything else), and how busy the whole machine was (percent of all cores)."""
    wall = after.wall - before.wall
    usage = {
        name: round(100 * (after.processes[name] - before.processes[name]) / wall)
        for name in before.processes
    }
    busy = after.machine_busy - before.machine_busy
    ours = sum(after.processes[name] - before.processes[name] for name in before.processes)
    usage["rest of machine (postgres, nats, ...)"] = round(100 * max(0.0, busy - ours) / wall)
    usage["machine busy % of all cores"] = round(100 * busy / (after.machine_total - before.machine_total))
    return usage


def describe_cpu(usage: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in usage.items())


class Processes:
    """The processes this bench started, each logging to its own file."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self._logs = logs
        self._env = env
        self.running: dict[str, asyncio.subprocess.Process] = {}
        # Each service's /metrics (HEALTH_PORT), for what the metrics showed during the run.
        self.metrics_urls: dict[str, str] = {}

    def _open_log(self, name: str) -> IO[bytes]:
        return (self._logs / f"{name}.log").open("ab")

    async def start(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self._open_log(name)
        port = free_port()
        env = {**self._env, **(env or {}), "HEALTH_PORT": str(port)}
        if module.startswith("services."):
            self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        try:
            self.running[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *args, cwd=REPO, env=env, stdout=log, stderr=log
            )
        finally:
            # The child holds its own descriptor.
            log.close()

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.running.items()}

    def check_alive(self) -> None:
        dead = [
            f"{name} (exit code {process.returncode})"
            for name, process in self.running.items()
            if process.returncode is not None
        ]
        if dead:
            raise BenchError(f"{', '.join(dead)} exited unexpectedly\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self._logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    async def stop(self, name: str) -> None:
        process = self.running.pop(name)
        self.metrics_urls.pop(name, None)
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), STOP_SECONDS)

    async def stop_all(self) -> None:
        """SIGTERM everything (newest first), wait, and kill what does not stop in time."""
        for process in reversed(self.running.values()):
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for name, process in self.running.items():
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                say(f"{name} ignored SIGTERM for {STOP_SECONDS:.0f} s: killing it")
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self.running.clear()


async def poll(
    what: str,
    probe: Callable[[], Awaitable[int]],
    target: int,
    started: float,
    deadline: float,
    processes: Processes,
) -> float:
    """Seconds from `started` (monotonic) until `probe()` reaches `target`; prints progress meanwhile."""
    reported = time.monotonic()
    while True:
        value = await probe()
        now = time.monotonic()
        if value >= target:
            return now - started
        processes.check_alive()
        if now - started > deadline:
            raise BenchError(f"timed out after {deadline:.0f} s waiting for {what}: {value} of {target}")
        if now - reported >= PROGRESS_SECONDS:
            say(f"  {what}: {value}/{target} after {now - started:.0f} s")
            reported = now
        await asyncio.sleep(POLL_SECONDS)


async def concurrently(label: str, calls: list[Callable[[], Awaitable[httpx.Response]]]) -> float:
    """Run the requests with at most HTTP_CONCURRENCY in flight; returns the seconds taken."""
    gate = asyncio.Semaphore(HTTP_CONCURRENCY)
    done = 0
    started = time.monotonic()

    async def one(call: Callable[[], Awaitable[httpx.Response]]) -> None:
        nonlocal done
        async with gate:
            (await call()).raise_for_status()
        done += 1
        if done % 1000 == 0 or done == len(calls):
            say(f"  {label}: {done}/{len(calls)}")

    await asyncio.gather(*(one(call) for call in calls))
    return time.monotonic() - started


@dataclass(frozen=True)
class Course:
    subject: str
    catalog_nbr: str
    watched: tuple[str, ...]
    unwatched: tuple[str, ...]


def course_spread(sections: int) -> list[Course]:
    """`sections` watched class numbers over courses following COURSE_PATTERN (the last course may be
    smaller), each course with its unwatched sections."""
    courses: list[Course] = []
    watched_index = unwatched_index = 0
    while watched_index < sections:
        watched, unwatched = COURSE_PATTERN[len(courses) % len(COURSE_PATTERN)]
        watched = min(watched, sections - watched_index)
        number = len(courses)
        courses.append(
            Course(
                subject=("CSE", "MAT", "ENG", "PHY", "BIO", "CHM", "ECN", "PSY")[number % 8],
                catalog_nbr=str(100 + number // 8),
                watched=tuple(str(10000 + 10 * i) for i in range(watched_index, watched_index + watched)),
                unwatched=tuple(
                    str(10005 + 10 * j) for j in range(unwatched_index, unwatched_index + unwatched)
                ),
            )
        )
        watched_index += watched
        unwatched_index += unwatched
    return courses


def section_body(course: Course, class_nbr: str) -> dict[str, Any]:
    return {
        "term": TERM,
        "class_nbr": class_nbr,
        "subject": course.subject,
        "catalog_nbr": course.catalog_nbr,
        "title": f"Bench {course.subject} {course.catalog_nbr}",
        "enrl_cap": 40,
        "enrl_tot": 40,
    }


def busiest_window(times: list[float], window: float) -> int:
    """The most of `times` inside any `window` seconds."""
    ordered = sorted(times)
    most = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def seed_watchers(pool: asyncpg.Pool, class_nbrs: list[str], per_section: int) -> tuple[int, int]:
    """Users and watches in bulk; each section gets `per_section` distinct users, round-robin over the
    pool. Returns (users, watches)."""
    users = max(per_section, math.ceil(len(class_nbrs) * per_section / WATCHES_PER_USER))
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO app_user (email, password_hash, email_verified)"
            " SELECT 'bench' || n || '@example.edu', '!', true FROM generate_series(1, $1::int) AS n"
            " RETURNING id",
            users,
        )
        ids = sorted(row["id"] for row in rows)
        watches = [
            (ids[(index * per_section + offset) % users], TERM, class_nbr)
            for index, class_nbr in enumerate(class_nbrs)
            for offset in range(per_section)
        ]
        await conn.copy_records_to_table("watch", records=watches, columns=["user_id", "term", "class_nbr"])
    # A live database has planner statistics; a freshly bulk-loaded one has none until autovacuum runs.
    await pool.execute("ANALYZE")
    return users, len(watches)


async def drained(js: JetStreamContext, consumer: Consumer) -> bool:
    info = await js.consumer_info(consumer.stream, consumer.durable)
    return not info.num_pending and not info.num_ack_pending


async def wait_drained(
    js: JetStreamContext, topology: Topology, processes: Processes, deadline: float
) -> None:
    """Every consumer has settled all it was given: nothing more is on its way to the database."""
    started = time.monotonic()
    for consumer in topology.consumers:
        while not await drained(js, consumer):
            processes.check_alive()
            if time.monotonic() - started > deadline:
                raise BenchError(f"consumer {consumer.durable} did not drain within {deadline:.0f} s")
            await asyncio.sleep(POLL_SECONDS)


async def wait_consumers_pulling(
    js: JetStreamContext, expected: dict[Consumer, int], processes: Processes
) -> None:
    """Every service replica has a pull request open: cycle timings then exclude service start-up."""
    started = time.monotonic()
    waiting = dict.fromkeys(expected, 0)
    while any(waiting[consumer] < replicas for consumer, replicas in expected.items()):
        processes.check_alive()
        if time.monotonic() - started > START_SECONDS:
            raise BenchError(f"services not pulling after {START_SECONDS:.0f} s\n{processes.log_tails()}")
        for consumer in expected:
            info = await js.consumer_info(consumer.stream, consumer.durable)
            waiting[consumer] = max(waiting[consumer], info.num_waiting or 0)
        await asyncio.sleep(0.1)


async def wait_simulator(client: httpx.AsyncClient, processes: Processes) -> None:
    started = time.monotonic()
    while True:
        processes.check_alive()
        with suppress(httpx.TransportError):
            if (await client.get("/_sim/stats")).status_code == 200:
                return
        if time.monotonic() - started > START_SECONDS:
            raise BenchError(f"catalog simulator not answering after {START_SECONDS:.0f} s")
        await asyncio.sleep(0.1)


async def run_setup(env: dict[str, str]) -> None:
    setup = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.setup",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await setup.communicate()
    if setup.returncode != 0:
        raise BenchError(f"python -m shared.setup failed:\n{output.decode(errors='replace')[-2000:]}")


def service_env(
    nats_url: str, database_url: str, redis_url: str, namespace: str, asu_api_url: str, resend_url: str
) -> dict[str, str]:
    # Inherited settings (a developer's RESEND_API_KEY, GATEWAY_PORT...) must not leak into the bench.
    env = {key: value for key, value in os.environ.items() if key.upper() not in _SETTING_VARIABLES}
    email = (
        {"EMAIL_BACKEND": "resend", "RESEND_API_KEY": "re_bench", "RESEND_API_URL": resend_url}
        if resend_url
        else {"EMAIL_BACKEND": "outbox"}
    )
    env.update(
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        NAMESPACE=namespace,
        ASU_API_URL=asu_api_url,
        **email,
        SECRET_KEY=secrets.token_hex(16),
        CHECK_INTERVAL_SECONDS=str(INTERVAL),
        ASU_REQUESTS_PER_MINUTE=str(UNLIMITED_REQUESTS_PER_MINUTE),
        LOG_LEVEL="warning",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


async def count(pool: asyncpg.Pool, query: str, *args: object) -> int:
    value: int = await pool.fetchval(query, *args)
    return value


@dataclass
class World:
    """What one bench run talks to; every piece of it is its own and removed afterwards."""

    pool: asyncpg.Pool
    js: JetStreamContext
    topology: Topology
    processes: Processes
    sim: httpx.AsyncClient


class Run:
    """The phases of one bench run, each returning its numbers."""

    def __init__(self, options: Options, world: World) -> None:
        self.options = options
        self.world = world
        # Ten checks a second is far below anything this pipeline does: a slower phase is stuck.
        self.deadline = max(180.0, options.sections * 0.1)
        self.courses = course_spread(options.sections)
        self.class_nbrs = [nbr for course in self.courses for nbr in course.watched]
        opened = max(1, round(options.sections * options.open_fraction))
        self.opened = sorted(random.Random(0).sample(self.class_nbrs, opened))
        self.expected_emails = len(self.opened) * options.watchers_per_section
        self.scheduler = Scheduler(world.pool, world.js, world.topology)

    async def seed(self) -> dict[str, Any]:
        unwatched = sum(len(course.unwatched) for course in self.courses)
        say(
            f"seeding {self.options.sections} watched full sections in {len(self.courses)} courses"
            f" (and {unwatched} unwatched sections of them) in the simulator"
        )
        seconds = await concurrently(
            "sections created",
            [
                partial(self.world.sim.post, "/_sim/sections", json=section_body(course, nbr))
                for course in self.courses
                for nbr in (*course.watched, *course.unwatched)
            ],
        )
        users, watches = await seed_watchers(
            self.world.pool, self.class_nbrs, self.options.watchers_per_section
        )
        say(f"seeded {self.options.sections} sections (all full), {users} users, {watches} watches")
        return {
            "seed_sections_seconds": round(seconds, 2),
            "users": users,
            "watches": watches,
            "courses": len(self.courses),
            "unwatched_sections": unwatched,
            "opened_sections": len(self.opened),
            "expected_emails": self.expected_emails,
        }

    async def start_services(self) -> None:
        processes, topology = self.world.processes, self.world.topology
        for replica in range(1, self.options.scrapers + 1):
            await processes.start(f"scraper-{replica}", "services.scraper")
        await processes.start("detector", "services.detector")
        await processes.start("notifier", "services.notifier")
        await wait_consumers_pulling(
            self.world.js,
            {topology.scraper: self.options.scrapers, topology.detector: 1, topology.notifier: 1},
            processes,
        )

    async def cycle(self, label: str, window: int, expected: int) -> CycleResult:
        # Windows ahead of the clock: no check of the bench goes stale (and is skipped) while it queues.
        cycle = await self.scheduler.run_cycle(time.time() + window * INTERVAL)
        if cycle.published != expected:
            raise BenchError(f"{label} published {cycle.published} checks, expected {expected}")
        say(f"  enqueued {cycle.published} checks ({cycle.courses} courses) in {cycle.seconds:.2f} s")
        return cycle

    async def searches(self) -> int:
        stats = (await self.world.sim.get("/_sim/stats")).raise_for_status().json()
        searches: int = stats["searches"]
        return searches

    def poll_count(
        self, what: str, target: int, started: float, query: str, *args: object
    ) -> Awaitable[float]:
        return poll(
            what,
            partial(count, self.world.pool, query, *args),
            target,
            started,
            self.deadline,
            self.world.processes,
        )

    async def emails(self) -> int:
        return await count(self.world.pool, SENT_EMAILS)

    async def first_sight(self, pids: dict[str, int]) -> dict[str, Any]:
        say("cycle 1: first sight of every section")
        cpu_before = sample_cpu(pids)
        started = time.monotonic()
        cycle = await self.cycle("cycle 1", 1, self.options.sections)
        stored = await self.poll_count(
            "sections stored", self.options.sections, started, "SELECT count(*) FROM section"
        )
        cpu = cpu_usage(cpu_before, sample_cpu(pids))
        await wait_drained(self.world.js, self.world.topology, self.world.processes, self.deadline)
        changes = (await self.world.js.stream_info(self.world.topology.changes_stream)).state.messages
        emails = await self.emails()
        if changes or emails:
            raise BenchError(f"first sight produced {changes} changes and {emails} emails, expected none")
        say(f"  all {self.options.sections} stored {stored:.1f} s after the cycle started; no emails")
        say(f"  cpu % of one core: {describe_cpu(cpu)}")
        # Planner statistics of a live system, where `section` is not the empty table it was when seeded:
        # with the stale ones, the scheduler's query (an anti-join on `section`) took 33 s instead of 0.1.
        await self.world.pool.execute("ANALYZE section")
        return {
            "cycle1_enqueue_seconds": cycle.seconds,
            "cycle1_all_stored_seconds": round(stored, 2),
            "cycle1_checks_per_second": round(self.options.sections / stored, 1),
            "cycle1_emails": emails,
            "cycle1_cpu_percent": cpu,
        }

    async def openings(self, pids: dict[str, int]) -> dict[str, Any]:
        say(f"opening a seat in {len(self.opened)} sections")
        await concurrently(
            "sections opened",
            [
                partial(self.world.sim.patch, f"/_sim/sections/{TERM}/{nbr}", json={"enrl_tot": 39})
                for nbr in self.opened
            ],
        )
        say("cycle 2: seats opened; one search per course")
        searches_before = await self.searches()
        cpu_before = sample_cpu(pids)
        started_wall, started = time.time(), time.monotonic()
        # The next window: new message ids, so JetStream does not take these checks for cycle 1's.
        cycle = await self.cycle("cycle 2", 2, len(self.courses))
        emailed, rechecked = await asyncio.gather(
            self.poll_count("emails", self.expected_emails, started, SENT_EMAILS),
            self.poll_count(
                "watched sections re-checked",
                self.options.sections,
                started,
                "SELECT count(*) FROM section AS s WHERE s.scraped_at >= to_timestamp($1) AND EXISTS"
                " (SELECT 1 FROM watch AS w WHERE w.term = s.term AND w.class_nbr = s.class_nbr)",
                started_wall,
            ),
        )
        cpu = cpu_usage(cpu_before, sample_cpu(pids))
        # A claim's sent_at is when the notifier recorded the provider's acceptance: sharper than polling.
        span = await self.world.pool.fetchrow(
            "SELECT extract(epoch FROM min(sent_at))::float8 AS first,"
            " extract(epoch FROM max(sent_at))::float8 AS last FROM notification WHERE sent_at IS NOT NULL"
        )
        assert span is not None
        first, last = span["first"] - started_wall, span["last"] - started_wall
        say(f"  {self.expected_emails} emails: first after {first:.1f} s, last after {last:.1f} s")
        say(f"  all sections re-checked after {rechecked:.1f} s (emails seen complete after {emailed:.1f} s)")
        say(f"  cpu % of one core: {describe_cpu(cpu)}")

        await wait_drained(self.world.js, self.world.topology, self.world.processes, self.deadline)
        await asyncio.sleep(QUIET_SECONDS)
        emails = await self.emails()
        if emails != self.expected_emails:
            raise BenchError(f"{emails} emails once drained and quiet, expected {self.expected_emails}")
        say(f"  still exactly {emails} emails {QUIET_SECONDS:.0f} s after the pipeline drained")
        requests = await self.searches() - searches_before
        per_section = requests / self.options.sections
        say(
            f"  {requests} class-search requests for {self.options.sections} watched sections:"
            f" {per_section:.3f} per watched section (one per section before course checks: 1.000)"
        )
        rps = self.options.provider_rps
        # N provider calls at `rps` span (N - 1) / rps seconds from the first acceptance to the last.
        rate = emails / (last - first + (1 / rps if rps else 0.0)) if last > first or rps else 0.0
        ceiling = rps * MAX_EMAILS_PER_CALL
        if rps:
            say(f"  {rate:.1f} emails/s against the provider's ceiling of {ceiling} ({rate / ceiling:.1%})")
        return {
            "cycle2_source_requests": requests,
            "source_requests_per_watched_section": round(per_section, 3),
            "emails_per_s": round(rate, 1),
            "provider_ceiling_emails_per_s": ceiling,
            "emails_vs_ceiling": round(rate / ceiling, 3) if ceiling else None,
            "cycle2_enqueue_seconds": cycle.seconds,
            "cycle2_first_email_seconds": round(first, 2),
            "cycle2_last_email_seconds": round(last, 2),
            "cycle2_emails": emails,
            "cycle2_emails_per_second": round(emails / last, 1),
            "cycle2_notifier_emails_per_second": round(emails / max(last - first, 0.001), 1),
            "cycle2_all_checked_seconds": round(rechecked, 2),
            "cycle2_changes": (
                await self.world.js.stream_info(self.world.topology.changes_stream)
            ).state.messages,
            "cycle2_cpu_percent": cpu,
        }

    async def provider_ceiling(self) -> dict[str, Any]:
        """Emails/s when the notifier has a backlog: the notifier is stopped, a burst of openings piles up
        in the changes stream, then it starts and drains them at the pace the provider allows."""
        rps = self.options.provider_rps
        full = sorted(set(self.class_nbrs) - set(self.opened))
        wanted = min(len(full), math.ceil(CEILING_EMAILS / self.options.watchers_per_section))
        if not rps or not wanted:
            return {}
        burst = sorted(random.Random(1).sample(full, wanted))
        expected = len(burst) * self.options.watchers_per_section
        say(f"provider ceiling: notifier stopped, a seat opens in {len(burst)} more sections")
        processes, js, topology = self.world.processes, self.world.js, self.world.topology
        await processes.stop("notifier")
        await concurrently(
            "sections opened",
            [
                partial(self.world.sim.patch, f"/_sim/sections/{TERM}/{nbr}", json={"enrl_tot": 39})
                for nbr in burst
            ],
        )
        changes = (await js.stream_info(topology.changes_stream)).state.messages + len(burst)
        started = time.monotonic()
        await self.cycle("provider ceiling", 3, len(self.courses))

        async def stored_changes() -> int:
            return (await js.stream_info(topology.changes_stream)).state.messages

        await poll("changes", stored_changes, changes, started, self.deadline, processes)
        sent = await self.emails()
        restarted = time.time()
        await processes.start("notifier", "services.notifier")
        await self.poll_count("emails", sent + expected, time.monotonic(), SENT_EMAILS)
        span = await self.world.pool.fetchrow(
            "SELECT count(*) AS emails, extract(epoch FROM min(sent_at))::float8 AS first,"
            " extract(epoch FROM max(sent_at))::float8 AS last FROM notification"
            " WHERE sent_at >= to_timestamp($1)",
            restarted,
        )
        assert span is not None
        rate = span["emails"] / (span["last"] - span["first"] + 1 / rps)
        ceiling = rps * MAX_EMAILS_PER_CALL
        share = rate / ceiling
        say(f"  {span['emails']} emails at {rate:.1f}/s against the ceiling of {ceiling}/s ({share:.1%})")
        return {
            "ceiling_emails": span["emails"],
            "ceiling_emails_per_s": round(rate, 1),
            "ceiling_vs_provider": round(rate / ceiling, 3),
        }

    async def budget(self) -> dict[str, Any]:
        """The fleet's request budget holds: every scraper restarted with BUDGET_PER_MINUTE, a cycle asking
        for more, and the busiest 60 s the simulator saw."""
        processes = self.world.processes
        say(
            f"request budget: {self.options.scrapers} scrapers restarted with"
            f" ASU_REQUESTS_PER_MINUTE={BUDGET_PER_MINUTE}, {len(self.courses)} course checks due"
        )
        for replica in range(1, self.options.scrapers + 1):
            await processes.stop(f"scraper-{replica}")
        for replica in range(1, self.options.scrapers + 1):
            await processes.start(
                f"budget-scraper-{replica}",
                "services.scraper",
                env={"ASU_REQUESTS_PER_MINUTE": str(BUDGET_PER_MINUTE)},
            )
        started = time.time()
        await self.cycle("budget", 4, len(self.courses))
        while time.time() - started < BUDGET_PHASE_SECONDS:
            processes.check_alive()
            await asyncio.sleep(1.0)
        stats = (await self.world.sim.get("/_sim/stats", params={"times": "1"})).raise_for_status().json()
        times = [moment for moment in stats["request_times"] if moment >= started]
        busiest = busiest_window(times, BUDGET_WINDOW_SECONDS)
        say(
            f"  {len(times)} requests in {BUDGET_PHASE_SECONDS:.0f} s; the busiest"
            f" {BUDGET_WINDOW_SECONDS:.0f} s held {busiest} against a budget of {BUDGET_PER_MINUTE}"
        )
        if busiest > BUDGET_PER_MINUTE:
            raise BenchError(f"the source saw {busiest} requests in {BUDGET_WINDOW_SECONDS:.0f} s")
        return {
            "budget_per_minute": BUDGET_PER_MINUTE,
            "budget_busiest_60s": busiest,
            "budget_phase_requests": len(times),
        }

    async def counters(self) -> dict[str, Any]:
        js, topology = self.world.js, self.world.topology
        stats = (await self.world.sim.get("/_sim/stats")).raise_for_status().json()
        redelivered: dict[str, int] = {}
        for consumer in topology.consumers:
            info = await js.consumer_info(consumer.stream, consumer.durable)
            redelivered[consumer.durable.removeprefix(f"{topology.namespace}-")] = info.num_redelivered or 0
        return {
            "simulator_searches": stats["searches"],
            # Cycle 1 by class number; cycle 2 and the ceiling phase one per course (one page each).
            "simulator_searches_expected": self.options.sections + 2 * len(self.courses),
            "redelivered": redelivered,
            "dead_letters": (await js.stream_info(topology.dead_stream)).state.messages,
            "scheduler_db_queries_per_cycle": SCHEDULER_QUERIES_PER_CYCLE,
        }


async def measure(options: Options, world: World) -> dict[str, Any]:
    run = Run(options, world)
    result: dict[str, Any] = {**vars(options), **await run.seed()}
    await run.start_services()
    pids = {**world.processes.pids(), "bench (scheduler, polling)": os.getpid()}
    result.update(await run.first_sight(pids))
    result.update(await run.openings(pids))
    result.update(await run.provider_ceiling())
    result.update(await run.counters())
    result["metrics"] = await scrape_metrics(world.processes.metrics_urls)
    # Last: it restarts the scrapers, whose counters are in the metrics above.
    result.update(await run.budget())
    return result


async def scrape_metrics(urls: dict[str, str]) -> dict[str, float]:
    """The services' own counters at the end of the run, summed over replicas (`name{labels}` → value),
    with the scheduler's from this process (the bench runs the cycles)."""
    texts = [generate_latest().decode()]
    async with httpx.AsyncClient(timeout=10) as client:
        texts += [(await client.get(url)).raise_for_status().text for url in urls.values()]
    totals: dict[str, float] = {}
    for family in (family for text in texts for family in text_string_to_metric_families(text)):
        if not family.name.startswith("pmc_") or family.type == "gauge":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_sum", "_count")):
                labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
                key = f"{sample.name}{{{labels}}}" if labels else sample.name
            elif sample.name == "pmc_open_to_email_seconds_bucket":
                key = f"pmc_open_to_email_seconds_bucket{{le={sample.labels['le']}}}"
            else:
                continue
            totals[key] = totals.get(key, 0.0) + sample.value
    return dict(sorted(totals.items()))


def bucket_quantile(metrics: dict[str, float], prefix: str, quantile: float) -> float | None:
    """The upper bound of the histogram bucket holding `quantile` of the observations (Prometheus-style)."""
    buckets = sorted(
        (float(key.split("le=")[1].rstrip("}")), value)
        for key, value in metrics.items()
        if key.startswith(prefix)
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = quantile * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= rank)


def summary(result: dict[str, Any]) -> str:
    redelivered = result["redelivered"]
    rows = [
        ("sections / watchers per section", f"{result['sections']} / {result['watchers_per_section']}"),
        ("courses / unwatched sections in them", f"{result['courses']} / {result['unwatched_sections']}"),
        ("users / watches", f"{result['users']} / {result['watches']}"),
        ("scraper replicas", str(result["scrapers"])),
        ("cycle 1 enqueue", f"{result['cycle1_enqueue_seconds']:.2f} s"),
        ("cycle 1 all sections stored", f"{result['cycle1_all_stored_seconds']:.1f} s"),
        ("cycle 1 checks/s", f"{result['cycle1_checks_per_second']:.1f}"),
        ("cycle 1 emails (first sight)", str(result["cycle1_emails"])),
        ("opened sections / expected emails", f"{result['opened_sections']} / {result['expected_emails']}"),
        ("cycle 2 enqueue", f"{result['cycle2_enqueue_seconds']:.2f} s"),
        ("cycle 2 first email", f"{result['cycle2_first_email_seconds']:.1f} s"),
        ("cycle 2 last email (end to end)", f"{result['cycle2_last_email_seconds']:.1f} s"),
        ("cycle 2 all sections re-checked", f"{result['cycle2_all_checked_seconds']:.1f} s"),
        (
            "cycle 2 source requests per watched section",
            f"{result['source_requests_per_watched_section']:.3f}"
            f" ({result['cycle2_source_requests']} requests)",
        ),
        (
            "busiest 60 s at the source vs the budget",
            f"{result['budget_busiest_60s']} of {result['budget_per_minute']}"
            f" ({result['budget_phase_requests']} requests in the phase)",
        ),
        (
            "backlog emails/s vs the provider's ceiling",
            f"{result.get('ceiling_emails_per_s')} of {result['provider_ceiling_emails_per_s']}"
            f" ({result.get('ceiling_vs_provider')})",
        ),
        (
            "cycle 2 emails/s vs the provider's ceiling",
            f"{result['emails_per_s']} of {result['provider_ceiling_emails_per_s']}"
            f" ({result['emails_vs_ceiling']})"
            if result["provider_ceiling_emails_per_s"]
            else "outbox (no ceiling)",
        ),
        ("cycle 2 emails/s (cycle start → last)", f"{result['cycle2_emails_per_second']:.1f}"),
        ("cycle 2 emails/s (first → last)", f"{result['cycle2_notifier_emails_per_second']:.1f}"),
        ("emails after quiet period", str(result["cycle2_emails"])),
        ("change events", str(result["cycle2_changes"])),
        (
            "simulator searches / expected",
            f"{result['simulator_searches']} / {result['simulator_searches_expected']}",
        ),
        ("redelivered", ", ".join(f"{name} {value}" for name, value in redelivered.items())),
        ("dead letters", str(result["dead_letters"])),
        ("cycle 1 cpu, % of one core", describe_cpu(result["cycle1_cpu_percent"])),
        ("cycle 2 cpu, % of one core", describe_cpu(result["cycle2_cpu_percent"])),
        (
            "DB queries per scheduler cycle",
            f"{result['scheduler_db_queries_per_cycle']} (by construction: {WATCHED_SECTIONS})",
        ),
    ]
    metrics = result["metrics"]
    for key in sorted(metrics):
        if not key.startswith("pmc_open_to_email_seconds_bucket"):
            rows.append((f"metric {key}", f"{metrics[key]:g}"))
    for quantile in (0.5, 0.99):
        bound = bucket_quantile(metrics, "pmc_open_to_email_seconds_bucket", quantile)
        rows.append((f"metric open → email p{round(quantile * 100)} (bucket bound)", f"≤ {bound} s"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


async def connect(nats_url: str) -> Client:
    try:
        nc = await asyncio.wait_for(connect_nats(nats_url, "pmc-bench"), 10)
        await nc.jetstream().account_info()
    except (OSError, TimeoutError, NatsError) as exc:
        raise BenchError(
            f"cannot use NATS JetStream at {redact_url(nats_url)}: {exc or type(exc).__name__}"
        ) from None
    return nc


def local_servers() -> tuple[str, str, str]:
    """NATS, PostgreSQL (server) and Redis URLs from the environment or the standard local ports, each
    checked to answer."""
    nats_url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    require_reachable("NATS", nats_url, "NATS_URL")
    require_reachable("PostgreSQL", server_url, "DATABASE_URL")
    require_reachable("Redis", redis_url, "REDIS_URL")
    return nats_url, server_url, redis_url


async def bench(options: Options) -> dict[str, Any]:
    nats_url, server_url, redis_url = local_servers()
    tag = secrets.token_hex(5)
    namespace, database = f"b{tag}", f"pmc_bench_{tag}"
    database_url = with_database(server_url, database)
    topology = Topology(namespace, INTERVAL)
    nc = await connect(nats_url)
    logs = Path(tempfile.mkdtemp(prefix="pmc-bench-"))
    port, resend_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{port}"
    resend_url = f"http://127.0.0.1:{resend_port}" if options.provider_rps else ""
    env = service_env(nats_url, database_url, redis_url, namespace, f"{sim_url}{API_PREFIX}", resend_url)
    env["RESEND_REQUESTS_PER_SECOND"] = str(options.provider_rps or 1)
    processes = Processes(logs, env)
    say(f"namespace {namespace}, database {database}, process logs in {logs}")
    pool: asyncpg.Pool | None = None
    succeeded = False
    try:
        await processes.start("simulator", "devtools.catalog_sim", "--port", str(port))
        if resend_url:
            await processes.start("resend-fake", "devtools.resend_fake", "--port", str(resend_port))
            await limit_provider(resend_url, options.provider_rps, processes)
        async with httpx.AsyncClient(base_url=sim_url, timeout=30) as sim:
            await wait_simulator(sim, processes)
            await run_setup(env)
            pool = await create_pool(database_url, max_size=4)
            result = await measure(options, World(pool, nc.jetstream(), topology, processes, sim))
        succeeded = True
        return result
    finally:
        await clean_up(processes, pool, nc, topology, server_url, database)
        if succeeded:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            say(f"process logs kept in {logs}")


async def limit_provider(resend_url: str, per_second: int, processes: Processes) -> None:
    """The fake allows what Resend allows by default: `per_second` requests, 429 beyond."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        processes.check_alive()
        try:
            await resend_fake.set_rate_limit(resend_url, per_second)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise BenchError(f"the Resend fake did not start within {START_SECONDS:.0f} s") from None
            await asyncio.sleep(POLL_SECONDS)


async def clean_up(
    processes: Processes,
    pool: asyncpg.Pool | None,
    nc: Client,
    topology: Topology,
    server_url: str,
    database: str,
) -> None:
    """Remove everything the run created; a step that fails is reported and the others still run."""

    async def delete_streams() -> None:
        for stream in topology.streams:
            with suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream.name)
        await nc.close()

    async def drop_database() -> None:
        if pool is not None:
            await pool.close()
        admin = await asyncpg.connect(with_database(server_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("stop the processes", processes.stop_all),
        (f"delete the streams of {topology.namespace}", delete_streams),
        (f"drop database {database}", drop_database),
    ]
    complete = True
    for what, step in steps:
        try:
            await step()
        except Exception as exc:
            complete = False
            print(f"clean-up: could not {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if complete:
        say(f"cleaned up: processes stopped, {topology.namespace} streams deleted, {database} dropped")


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    # The in-process scheduler logs every cycle at info; the bench prints its own lines.
    configure_logging(Settings(log_level="warning"), "bench")
    try:
        result = asyncio.run(bench(options))
    except BenchError as exc:
        sys.exit(f"bench failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench interrupted")
    except (OSError, asyncpg.PostgresError) as exc:
        sys.exit(f"bench failed: {type(exc).__name__}: {exc}")
    say("")
    say(summary(result))
    say("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
