"""Which terms a student can watch, and which one they most likely mean (pure, on Arizona's calendar).

ASU's Spring runs from early January to early May, its Summer sessions from mid-May to early August, and
Fall from mid-August to mid-December. Here the three spans cover the year without gaps: a day belongs to the
term running then, or, between two terms, to the one that ended last (its late drops still move seats). The
last weeks of December stay with Fall, whose watches the detector retires once the class search says the
term has ended.

The term students are registering for is the default: ASU opens registration for a term around the middle
of the term before (for Fall and Summer in March, for Spring in October). So the default is the current
term until its midpoint, then the next one. In the second half of Spring that is Summer, whose registration
opens with Fall's; Fall is one choice further.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import msgspec
from litestar import get

from shared.asu import term_code, term_label

# Arizona keeps Mountain Standard Time all year (no daylight saving), so a fixed offset is exact.
ARIZONA = timezone(timedelta(hours=-7), "MST")
# The current term and the two after it: a year ahead, as far as ASU publishes classes.
OFFERED = 3


@dataclass(frozen=True)
class Span:
    season: str
    # (month, day), inclusive
    first: tuple[int, int]
    last: tuple[int, int]


SPANS = (
    Span("Spring", (1, 1), (5, 15)),
    Span("Summer", (5, 16), (8, 15)),
    Span("Fall", (8, 16), (12, 31)),
)


class Term(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str
    # The term students are registering for now: the one to preselect.
    default: bool


def arizona_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(ARIZONA).date()


def _current(today: date) -> tuple[int, int]:
    """The year and the index in SPANS of the term `today` belongs to."""
    index = next(i for i, span in enumerate(SPANS) if (today.month, today.day) <= span.last)
    return today.year, index


def _past_midpoint(today: date, year: int, index: int) -> bool:
    span = SPANS[index]
    first, last = date(year, *span.first), date(year, *span.last)
    return today > first + timedelta(days=(last - first).days // 2)


def upcoming_terms(today: date, count: int = OFFERED) -> list[Term]:
    """The term `today` belongs to and the ones after it, oldest first; one is the default."""
    year, index = _current(today)
    default_at = 1 if _past_midpoint(today, year, index) else 0
    terms = []
    for position in range(count):
        code = term_code(year, SPANS[index].season)
        terms.append(Term(code=code, label=term_label(code), default=position == default_at))
        index += 1
        if index == len(SPANS):
            index, year = 0, year + 1
    return terms


def _named(term: Term) -> str:
    return f"{term.label} ({term.code})"


def term_problem(term: str, today: date) -> str | None:
    """Why a well-formed term code cannot be watched on `today` (it ended, or is not offered yet), naming
    the terms that can; None when it can. Term codes sort in time order: 2 + year + season digit."""
    offered = upcoming_terms(today)
    if any(t.code == term for t in offered):
        return None
    names = [_named(t) for t in offered]
    choose = f"choose {', '.join(names[:-1])} or {names[-1]}"
    when = "has ended" if term < offered[0].code else "is not open for watches yet"
    return f"{term_label(term)} ({term}) {when}: {choose}"


@get("/api/v1/terms")
async def list_terms() -> list[Term]:
    """Terms a watch can be added for, current first: `[{"code": "2267", "label": "Fall 2026",
    "default": false}, ...]`. Exactly one has `"default": true`: the term students are registering for
    (the current one until its midpoint, then the next one)."""
    return upcoming_terms(arizona_today())
