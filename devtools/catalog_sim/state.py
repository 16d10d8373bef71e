"""What the simulator remembers between requests: sections, armed faults, open scrolls, request counts."""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from devtools.catalog_sim.sections import SimSection, search_answer

# Rows per page: what ASU's class search was seen answering (asking for fewer changed nothing).
DEFAULT_PAGE_SIZE = 200
# Open scrolls kept; the oldest unused goes first, so a client that never finishes cannot grow the
# simulator without bound. Elasticsearch expires scrolls by time; a count is easier to test against.
MAX_SCROLLS = 1_000

PageSize = Annotated[int, msgspec.Meta(ge=1, le=10_000)]


MAX_REQUEST_TIMES = 100_000


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /_sim/faults`: next `count` searches wait `latency_ms`, then answer `status` (0: as usual)."""

    status: Annotated[int, msgspec.Meta(ge=0, le=599)] = 0
    count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=120_000)] = 0
    # Sent as `Retry-After` (seconds) with the error status when given: what a 429 from ASU may carry.
    retry_after: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None

    def __post_init__(self) -> None:
        if self.status and self.status < 400:
            raise ValueError("status must be 0 (delay only) or an error status of 400 or more")


class ResetOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /_sim/reset` body (optional): how the simulator pages from now on."""

    page_size: PageSize = DEFAULT_PAGE_SIZE


@dataclass
class _Scroll:
    """One search's rows as they were when it started, like an Elasticsearch scroll context."""

    rows: tuple[SimSection, ...]
    page_size: int
    served: int = 0


class SimCatalog:
    def __init__(self, sections: Iterable[SimSection] = (), *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.sections: dict[tuple[str, str], SimSection] = {}
        self._fault = FaultPlan(count=0)
        self._fault_left = 0
        self._scrolls: OrderedDict[str, _Scroll] = OrderedDict()
        self.page_size = page_size
        self.searches = 0
        self.pages = 0
        self.faulted = 0
        self.searches_by_class_nbr: Counter[str] = Counter()
        self.searches_by_course: Counter[str] = Counter()
        # When each recent search came: bounded, so a long-running demo cannot grow without end.
        self.request_times: deque[float] = deque(maxlen=MAX_REQUEST_TIMES)
        self.reset(sections, page_size=page_size)

    def put(self, section: SimSection) -> bool:
        """Store `section`; True when it replaced one."""
        replaced = section.key in self.sections
        self.sections[section.key] = section
        return replaced

    def arm(self, plan: FaultPlan) -> None:
        self._fault = plan
        self._fault_left = plan.count

    def take_fault(self) -> FaultPlan | None:
        """The fault for this search, if one is still armed."""
        if self._fault_left <= 0:
            return None
        self._fault_left -= 1
        return self._fault

    def record_search(self, class_nbr: str | None, course: str | None = None) -> None:
        """Count one request to the search, first page or next (each is a request to the source)."""
        self.searches += 1
        self.request_times.append(time.time())
        if class_nbr:
            self.searches_by_class_nbr[class_nbr] += 1
        if course:
            self.searches_by_course[course] += 1

    def first_page(self, matched: Sequence[SimSection]) -> dict[str, Any]:
        """The first page of a new search; the rest stays behind a fresh scrollId, as of now."""
        if not matched:
            self.pages += 1
            return search_answer((), 0, self.page_size, None)
        scroll_id = secrets.token_urlsafe(48)
        self._scrolls[scroll_id] = _Scroll(tuple(matched), self.page_size)
        while len(self._scrolls) > MAX_SCROLLS:
            self._scrolls.popitem(last=False)
        return self._next(scroll_id)

    def next_page(self, scroll_id: str) -> dict[str, Any] | None:
        """The next page of the search behind `scroll_id` (`classes: []` past its end); None if unknown."""
        if scroll_id not in self._scrolls:
            return None
        self._scrolls.move_to_end(scroll_id)
        return self._next(scroll_id)

    def _next(self, scroll_id: str) -> dict[str, Any]:
        scroll = self._scrolls[scroll_id]
        answer = search_answer(scroll.rows, scroll.served, scroll.page_size, scroll_id)
        scroll.served = min(len(scroll.rows), scroll.served + scroll.page_size)
        self.pages += 1
        return answer

    def reset(self, sections: Iterable[SimSection] = (), *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        """Back to `sections` and `page_size`, no armed fault, no open scroll, counts at zero."""
        self.sections = {s.key: s for s in sections}
        self._fault = FaultPlan(count=0)
        self._fault_left = 0
        self._scrolls.clear()
        self.page_size = page_size
        self.searches = 0
        self.pages = 0
        self.faulted = 0
        self.searches_by_class_nbr = Counter()
        self.searches_by_course = Counter()
        self.request_times.clear()

    def stats(self, *, times: bool = False) -> dict[str, object]:
        """The counts; with `times`, also when each recent search came (unix seconds), for a rate check."""
        extra: dict[str, object] = {"request_times": list(self.request_times)} if times else {}
        return {
            **extra,
            "searches": self.searches,
            "pages": self.pages,
            "faulted": self.faulted,
            "by_class_nbr": dict(self.searches_by_class_nbr),
            "by_course": dict(self.searches_by_course),
            "sections": len(self.sections),
            "faults_left": self._fault_left,
            "scrolls": len(self._scrolls),
            "page_size": self.page_size,
        }
