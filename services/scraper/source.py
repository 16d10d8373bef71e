"""The class search as the scraper sees it: every request passes the fleet's guard (breaker, 429 pause,
request budget), goes to the JSON API or, while the API shuts us out, to the class-list page in Chromium,
and comes back parsed. Callers get a section, a course, or one of three failures that say what to do next:
`Blocked` (do not ask now; nothing was sent), `SourceFault` (it failed this time; ask later) and
`Unreadable` (neither way gives an answer we can read)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog

from services.scraper.browser import BrowserSource, BrowserUnavailable, PageFailed
from services.scraper.catalog import (
    ApiRefused,
    CatalogClient,
    PermanentCatalogError,
    RateLimited,
    TransientCatalogError,
    course_query,
    section_query,
)
from services.scraper.guard import SourceGuard, SourceUnavailable
from services.scraper.mode import Mode, ModeStore
from services.scraper.parser import CatalogFormatError, CoursePage, find_section, read_course_page
from shared.events import SectionState
from shared.metrics import SOURCE_REQUESTS

log = structlog.get_logger()

T = TypeVar("T")
Heartbeat = Callable[[], Awaitable[None]]

# A course needing more pages than this is not a course (ASU's largest have a few hundred sections).
MAX_PAGES = 25
# How long a request may wait for room in the fleet's budget before its check is put back for later.
BUDGET_WAIT_SECONDS = 60.0
# When Redis cannot say whether a request is allowed, ask again after this long.
UNKNOWN_RETRY_SECONDS = 5.0
# A check handed back by a stopping scraper: another replica may take it at once.
STOPPING_RETRY_SECONDS = 1.0


class Blocked(Exception):
    """No request may be made now (breaker not closed, a 429 pause, the budget spent, Redis unreachable);
    nothing was sent. `wait`: seconds worth waiting before asking again."""

    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason)
        self.wait = wait


class SourceFault(Exception):
    """The class search failed this time (5xx, timeout, a page without an answer): ask again later."""


class Unreadable(Exception):
    """Neither the API nor the class-list page gives an answer we can read for this question."""


class _ShutOut(Exception):
    """The API refused us (401/403) or answered a shape we cannot read: the page may still work."""


@dataclass(frozen=True)
class CourseAnswer:
    """Every section of one course the class search listed, read page after page."""

    sections: tuple[SectionState, ...]
    # Class numbers of rows that could not be read: neither seen nor missing.
    unreadable: frozenset[str]
    problems: tuple[str, ...]
    pages: int
    # False when not every page was read (the browser reads the first only): absence then proves nothing.
    complete: bool


def page_query(query: Mapping[str, str]) -> dict[str, str]:
    """The class-list page's own query for an API query: the page adds `refine` itself and searches one
    class number by `keywords`."""
    shown = {name: value for name, value in query.items() if name not in ("refine", "classNbr", "scrollId")}
    if "classNbr" in query:
        shown["keywords"] = query["classNbr"]
    return shown


class ClassSearch:
    def __init__(
        self,
        api: CatalogClient,
        browser: BrowserSource,
        guard: SourceGuard,
        mode: ModeStore,
        *,
        budget_wait: float = BUDGET_WAIT_SECONDS,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._api = api
        self._browser = browser
        self.guard = guard
        self._mode = mode
        self._budget_wait = budget_wait
        self._stop = stop or asyncio.Event()

    async def section(self, term: str, class_nbr: str, heartbeat: Heartbeat) -> SectionState | None:
        """The section, or None when the class search does not list it."""
        state, _ = await self._ask(
            section_query(term, class_nbr),
            f"{term}/{class_nbr}",
            lambda payload: find_section(payload, term, class_nbr),
            heartbeat,
        )
        SOURCE_REQUESTS.labels("not_found" if state is None else "ok").inc()
        return state

    async def course(self, term: str, subject: str, catalog_nbr: str, heartbeat: Heartbeat) -> CourseAnswer:
        """Every section of the course: one search, then its `scrollId` pages while the answer has more."""
        what = f"{term}/{subject} {catalog_nbr}"
        sections: dict[str, SectionState] = {}
        unreadable: set[str] = set()
        problems: list[str] = []
        query = course_query(term, subject, catalog_nbr)
        rows = 0
        pages = 0
        while True:
            page, mode = await self._ask(
                query,
                what,
                lambda payload: read_course_page(payload, term, subject, catalog_nbr),
                heartbeat,
                browser=pages == 0,
            )
            pages += 1
            SOURCE_REQUESTS.labels("ok").inc()
            for state in page.sections:
                sections.setdefault(state.class_nbr, state)
            unreadable.update(page.unreadable)
            problems.extend(page.refused)
            rows += page.rows
            if _last_page(page, rows):
                return self._answer(sections, unreadable, problems, pages, complete=True)
            if mode is Mode.BROWSER:
                log.warning("course has more pages than the class-list page shows", course=what, rows=rows)
                return self._answer(sections, unreadable, problems, pages, complete=False)
            if pages >= MAX_PAGES:
                log.warning("course paging stopped", course=what, pages=pages, rows=rows, total=page.total)
                return self._answer(sections, unreadable, problems, pages, complete=False)
            query = {**course_query(term, subject, catalog_nbr), "scrollId": page.scroll_id or ""}

    @staticmethod
    def _answer(
        sections: dict[str, SectionState],
        unreadable: set[str],
        problems: list[str],
        pages: int,
        *,
        complete: bool,
    ) -> CourseAnswer:
        return CourseAnswer(
            tuple(sections.values()),
            frozenset(unreadable - sections.keys()),
            tuple(problems),
            pages,
            complete,
        )

    async def _ask(
        self,
        query: Mapping[str, str],
        what: str,
        parse: Callable[[bytes], T],
        heartbeat: Heartbeat,
        *,
        browser: bool = True,
    ) -> tuple[T, Mode]:
        """Ask through the API, or the page while the fleet reads pages (only where `browser`: later pages
        of a course exist only in the API)."""
        if await self._mode.current() is Mode.API:
            try:
                result = await self._attempt(Mode.API, query, what, parse, heartbeat, scrolling=not browser)
                return result, Mode.API
            except _ShutOut as exc:
                await self._mode.use_browser(str(exc))
        if not browser:
            raise SourceFault(
                f"the API shut us out while paging {what}; the check is repeated from its page 1"
            )
        return await self._attempt(Mode.BROWSER, page_query(query), what, parse, heartbeat), Mode.BROWSER

    async def _attempt(
        self,
        mode: Mode,
        query: Mapping[str, str],
        what: str,
        parse: Callable[[bytes], T],
        heartbeat: Heartbeat,
        *,
        scrolling: bool = False,
    ) -> T:
        admission = await self.guard.admit()
        if not admission.allowed:
            raise Blocked(admission.reason, admission.wait)
        probe = admission.probe
        try:
            slot = await self._take_slot(heartbeat)
        except SourceUnavailable as exc:
            await self.guard.abandoned(probe=probe)
            raise Blocked(str(exc), UNKNOWN_RETRY_SECONDS) from exc
        if slot is not None:
            await self.guard.abandoned(probe=probe)
            raise slot
        try:
            payload = await (
                self._api.search(query, what) if mode is Mode.API else self._browser.search(query)
            )
        except RateLimited as exc:
            pause = await self.guard.rate_limited(exc.retry_after, probe=probe)
            raise Blocked(f"{exc}: every scraper pauses {pause:.0f} s", pause) from exc
        except ApiRefused as exc:
            # Says nothing about ASU's health; the page is asked next, under a probe slot of its own.
            await self.guard.abandoned(probe=probe)
            raise _ShutOut(str(exc)) from exc
        except (TransientCatalogError, PageFailed) as exc:
            await self.guard.failed(str(exc), probe=probe)
            raise SourceFault(str(exc)) from exc
        except PermanentCatalogError as exc:
            if scrolling:
                # The search forgot its scroll (scrolls expire): the check starts again from page 1.
                await self.guard.abandoned(probe=probe)
                raise SourceFault(f"{exc} (a later page): the course is searched again") from exc
            # Any other 4xx to a question the page itself asks: the API changed under us.
            await self.guard.failed(str(exc), probe=probe)
            raise Unreadable(str(exc)) from exc
        except BrowserUnavailable as exc:
            # Our own fault, not the source's: no breaker failure, the check waits for a working browser.
            await self.guard.abandoned(probe=probe)
            raise SourceFault(str(exc)) from exc
        try:
            result = parse(payload)
        except CatalogFormatError as exc:
            SOURCE_REQUESTS.labels("bad_shape").inc()
            await self.guard.failed(f"unknown answer shape: {exc}", probe=probe)
            if mode is Mode.API:
                raise _ShutOut(f"unknown answer shape from the API: {exc}") from exc
            raise Unreadable(f"the class-list page's answer has an unknown shape: {exc}") from exc
        await self.guard.succeeded(probe=probe)
        return result

    async def _take_slot(self, heartbeat: Heartbeat) -> Blocked | None:
        """Wait for room in the fleet's budget; a Blocked to raise when there is none in time, or when the
        scraper is stopping (its checks go back to the stream for another replica at once)."""
        slot = asyncio.ensure_future(self.guard.take_slot(heartbeat, max_wait=self._budget_wait))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({slot, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not slot.done():
            slot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot
            return Blocked("the scraper is stopping", STOPPING_RETRY_SECONDS)
        if not slot.result():
            return Blocked("the fleet's request budget (ASU_REQUESTS_PER_MINUTE) is spent", self._budget_wait)
        return None

    async def aclose(self) -> None:
        await self._browser.aclose()
        await self._api.aclose()
        await self.guard.aclose()
        await self._mode.aclose()


def _last_page(page: CoursePage, rows: int) -> bool:
    if not page.scroll_id or page.rows == 0:
        return True
    return page.total is not None and rows >= page.total
