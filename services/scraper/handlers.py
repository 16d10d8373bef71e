"""The scraper's entrypoint: a batch of checks, each asked of the class search concurrently and settled
alone. A check is a course (every section of it in one search) or one section not seen yet.

What happens to a check:
- its window has passed (and it is a minute old): acknowledged without a request (the next window covers
  it; after an outage the backlog must not become a burst);
- the guard blocks it (breaker not closed, a 429 pause, the budget spent, Redis unreachable): handed back
  for after the wait, or acknowledged when that is past its window; never dead-lettered for it;
- the source failed this time: retried with a delay; an answer neither way can read: dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from services.scraper.guard import BreakerState
from services.scraper.observation import course_observations, found, missing, snapshot_id
from services.scraper.source import Blocked, ClassSearch, SourceFault, Unreadable
from services.scraper.verdict import judge
from shared.delivery import Settler, describe, message_id
from shared.events import CheckCourse, CheckSection
from shared.messaging import Outgoing, publish_all
from shared.metrics import CHECKS_SKIPPED, SOURCE_REQUESTS
from shared.streams import Consumer, Topology

log = structlog.get_logger()

# While the breaker is open (or Redis cannot say), how often the loop looks again at most.
GATE_POLL_SECONDS = 5.0
# A check is stale once its window has passed and it is at least this old: with short windows (tests, a
# demo) a scraper a little behind would otherwise skip every check it fetches and never catch up.
STALE_MIN_SECONDS = 60.0


class Scraper:
    def __init__(
        self,
        search: ClassSearch,
        js: JetStreamContext,
        topology: Topology,
        consumer: Consumer | None = None,
        *,
        probes: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._search = search
        self._js = js
        self._topology = topology
        self._probes = probes
        self._clock = clock
        self.settler = Settler(js, topology, consumer or topology.scraper)

    async def admit(self, wanted: int, stop: asyncio.Event) -> int:
        """How many checks to fetch now: all while the breaker is closed, a few probes while it is half
        open, none while it is open or unknown (the checks wait in the stream, their deliveries unspent)."""
        view = await self._search.guard.view()
        if view.state is BreakerState.CLOSED:
            return wanted
        if view.state is BreakerState.HALF_OPEN:
            return min(wanted, self._probes)
        wait = GATE_POLL_SECONDS
        if view.retry_at is not None:
            wait = min(GATE_POLL_SECONDS, max(0.05, view.retry_at - self._clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
        return 0

    async def handle(self, msgs: list[Msg]) -> None:
        results = await asyncio.gather(*(self.check(msg) for msg in msgs), return_exceptions=True)
        for msg, result in zip(msgs, results, strict=True):
            # A bug in one look-up settles that check alone, after its siblings have settled theirs.
            if isinstance(result, Exception):
                log.error("check crashed", error=describe(result), exc_info=result)
                await self.settler.fail_unsettled(msg, result)
            elif isinstance(result, BaseException):
                raise result

    async def check(self, msg: Msg) -> None:
        check: CheckCourse | CheckSection | None
        if msg.subject == self._topology.check_course_subject:
            check = await self.settler.decode(msg, CheckCourse)
        else:
            check = await self.settler.decode(msg, CheckSection)
        if check is None:
            return
        window_end = (check.window + 1) * self._topology.check_interval_seconds
        if self._clock() >= max(window_end, check.requested_at + STALE_MIN_SECONDS):
            CHECKS_SKIPPED.labels("stale").inc()
            await self.settler.ack(msg)
            log.info("check skipped: its window has passed", msg_id=message_id(msg), window=check.window)
            return
        started = time.monotonic()
        try:
            if isinstance(check, CheckCourse):
                outgoing = await self._course(msg, check)
            else:
                outgoing = await self._section(msg, check)
        except Blocked as exc:
            await self._defer(msg, window_end, exc)
            return
        except SourceFault as exc:
            await self.settler.fail(msg, exc, transient=True)
            return
        except Unreadable as exc:
            await self.settler.fail(msg, exc, transient=False)
            return
        try:
            await publish_all(self._js, outgoing)
        except (NatsError, TimeoutError) as exc:
            await self.settler.fail(msg, exc, transient=True)
            return
        await self.settler.ack(msg)
        log.info(
            "checked",
            msg_id=message_id(msg),
            check=_describe(check),
            published=len(outgoing),
            ms=round((time.monotonic() - started) * 1000),
        )

    async def _section(self, msg: Msg, check: CheckSection) -> list[Outgoing]:
        state = await self._search.section(check.term, check.class_nbr, msg.in_progress)
        snapshot = snapshot_id(check.term, check.class_nbr, msg)
        scraped_at = self._clock()
        log.info(
            "section checked",
            msg_id=message_id(msg),
            snapshot_id=snapshot,
            term=check.term,
            class_nbr=check.class_nbr,
            found=state is not None,
            open_seats=None if state is None else state.open_seats,
        )
        if state is None:
            return [missing(self._topology, check.term, check.class_nbr, snapshot, scraped_at)]
        return [found(self._topology, state, snapshot, scraped_at)]

    async def _course(self, msg: Msg, check: CheckCourse) -> list[Outgoing]:
        answer = await self._search.course(check.term, check.subject, check.catalog_nbr, msg.in_progress)
        verdict = judge(check.class_nbrs, answer)
        course = f"{check.subject} {check.catalog_nbr}"
        for problem in answer.problems:
            log.warning("class search row refused", term=check.term, course=course, problem=problem)
        if verdict.course_vanished:
            SOURCE_REQUESTS.labels("empty_course").inc()
            log.warning(
                "whole course missing: a source fault, no section reported missing",
                msg_id=message_id(msg),
                term=check.term,
                course=course,
                watched=len(check.class_nbrs),
            )
        elif verdict.unknown:
            log.warning(
                "watched sections neither seen nor missing",
                term=check.term,
                course=course,
                class_nbrs=sorted(verdict.unknown),
                complete=answer.complete,
            )
        log.info(
            "course looked up",
            msg_id=message_id(msg),
            term=check.term,
            course=course,
            pages=answer.pages,
            sections=len(answer.sections),
            watched=len(check.class_nbrs),
            missing=sorted(verdict.missing),
        )
        # One line per watched section, named by its snapshot: a grep for it follows it to the email.
        states = {state.class_nbr: state for state in answer.sections}
        for class_nbr in check.class_nbrs:
            state = states.get(class_nbr)
            log.info(
                "section checked",
                msg_id=message_id(msg),
                snapshot_id=snapshot_id(check.term, class_nbr, msg),
                term=check.term,
                class_nbr=class_nbr,
                found=state is not None if class_nbr not in verdict.unknown else None,
                open_seats=None if state is None else state.open_seats,
            )
        return course_observations(
            self._topology, msg, check.term, check.class_nbrs, answer.sections, verdict.missing, self._clock()
        )

    async def _defer(self, msg: Msg, window_end: float, blocked: Blocked) -> None:
        delay = max(1.0, blocked.wait)
        if self._clock() + delay >= window_end or self.settler.last_delivery(msg):
            CHECKS_SKIPPED.labels("blocked").inc()
            await self.settler.ack(msg)
            log.info("check skipped: blocked past its window", msg_id=message_id(msg), reason=str(blocked))
            return
        await self.settler.defer(msg, delay, str(blocked))

    async def close(self) -> None:
        await self._search.aclose()


def _describe(check: CheckCourse | CheckSection) -> str:
    if isinstance(check, CheckCourse):
        return f"{check.term} {check.subject} {check.catalog_nbr}"
    return f"{check.term}/{check.class_nbr}"
