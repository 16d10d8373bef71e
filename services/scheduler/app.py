"""The scheduler: at the start of every window, one check per course with watched sections due (and one per
section not seen yet)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import asyncpg
import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from services.scheduler.cycles import record_cycle
from services.scheduler.due import check_messages, seconds_until_next_window
from services.scheduler.sections import watched_sections
from shared.freshness import freshness
from shared.messaging import publish_all
from shared.metrics import (
    CHECKS_PUBLISHED,
    FRESHNESS_SECONDS,
    SCHEDULER_CYCLE_SECONDS,
    SCHEDULER_LAST_CYCLE,
    WATCHED_SECTIONS,
)
from shared.streams import Topology

log = structlog.get_logger()

# How often the freshness gauges are refreshed between cycles.
FRESHNESS_POLL_SECONDS = 15.0


@dataclass(frozen=True)
class CycleResult:
    window: int
    sections: int
    # Checks in this cycle (courses + sections looked up by class number), and how many were courses.
    checks: int
    courses: int
    published: int
    duplicates: int
    seconds: float


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, topology: Topology) -> None:
        self._pool = pool
        self._js = js
        self._topology = topology

    async def run_cycle(self, now: float | None = None) -> CycleResult:
        started = time.monotonic()
        now = time.time() if now is None else now
        window = self._topology.window_of(now)
        sections = await watched_sections(self._pool, window)
        messages = check_messages(self._topology, sections, window, now)
        acks = await publish_all(self._js, messages)
        duplicates = sum(1 for ack in acks if ack.duplicate)
        CHECKS_PUBLISHED.inc(len(acks) - duplicates)
        SCHEDULER_CYCLE_SECONDS.observe(time.monotonic() - started)
        SCHEDULER_LAST_CYCLE.set(now)
        result = CycleResult(
            window=window,
            sections=len(sections),
            checks=len(messages),
            courses=sum(1 for m in messages if m.subject == self._topology.check_course_subject),
            published=len(acks) - duplicates,
            duplicates=duplicates,
            seconds=round(time.monotonic() - started, 3),
        )
        await record_cycle(self._pool, window, result.sections, result.published, result.duplicates)
        log.info(
            "check cycle published",
            window=result.window,
            sections=result.sections,
            checks=result.checks,
            courses=result.courses,
            published=result.published,
            duplicates=result.duplicates,
            seconds=result.seconds,
        )
        return result

    async def measure_freshness(self) -> None:
        state = await freshness(self._pool)
        WATCHED_SECTIONS.labels("checked").set(state.checked)
        WATCHED_SECTIONS.labels("unchecked").set(state.unchecked)
        FRESHNESS_SECONDS.labels("oldest").set(state.oldest or 0.0)
        FRESHNESS_SECONDS.labels("median").set(state.median or 0.0)

    async def watch_freshness(self, stop: asyncio.Event) -> None:
        """Keep the freshness gauges current, also between cycles (an hour-long interval is possible)."""
        while not stop.is_set():
            try:
                await self.measure_freshness()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("freshness unavailable", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FRESHNESS_POLL_SECONDS)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """A cycle now, then one at the start of each window, aligned to the wall clock so that replicas
        publish the same windows (and JetStream deduplicates them)."""
        interval = self._topology.check_interval_seconds
        while not stop.is_set():
            try:
                await self.run_cycle()
            except (OSError, asyncpg.PostgresError, NatsError, TimeoutError) as exc:
                log.error("check cycle failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds_until_next_window(time.time(), interval))
