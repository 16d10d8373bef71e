"""How a section is shown to a student: one shape for the watch list, live updates and the preview of a
section before it is watched (`GET /api/v1/sections/{term}/{class_nbr}`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import asyncpg
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import OpenAPIType, Schema

from services.gateway.bodies import UnprocessableContent, answers
from services.gateway.terms import arizona_today, upcoming_terms
from shared.asu import catalog_url, instructor_label, is_class_nbr, is_term, rate_my_professor_url, term_label
from shared.events import SectionLive, SectionState

# The examples are the terms offered when the document is made (at start-up), so that they can be sent.
TERM_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    pattern="^2[0-9]{2}[147]$",
    examples=[term.code for term in upcoming_terms(arizona_today())],
)
CLASS_NBR_SCHEMA = Schema(type=OpenAPIType.STRING, pattern="^[0-9]{5}$", examples=["66445"])


class InstructorLink(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    url: str


class SectionView(msgspec.Struct, frozen=True, kw_only=True):
    course: str
    subject: str
    catalog_nbr: str
    title: str
    section: str
    component: str
    instructors: list[str]
    instructor_label: str
    instructor_links: list[InstructorLink]
    enrl_cap: int
    enrl_tot: int
    open_seats: int
    wait_cap: int
    wait_tot: int
    reserved_seats: bool
    days: str
    start_time: str | None
    end_time: str | None
    location: str
    instruction_mode: str
    class_status: str
    found: bool
    last_checked: datetime
    catalog_url: str


class LiveSectionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of an SSE `section` event."""

    term: str
    class_nbr: str
    found: bool
    checked_at: datetime
    section: SectionView | None


Lookup = Literal["checking", "found", "not_found"]


class WatchView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    term: str
    term_label: str
    class_nbr: str
    created_at: datetime
    catalog_url: str
    # "checking" until the first look-up; "not_found" while the class search does not list it.
    status: Lookup
    section: SectionView | None


def section_view(state: SectionState, *, found: bool, checked_at: datetime) -> SectionView:
    links = [
        InstructorLink(name=name, url=url)
        for name in state.instructors
        if (url := rate_my_professor_url(name)) is not None
    ]
    return SectionView(
        course=state.course,
        subject=state.subject,
        catalog_nbr=state.catalog_nbr,
        title=state.title,
        section=state.section,
        component=state.component,
        instructors=list(state.instructors),
        instructor_label=instructor_label(state.instructors),
        instructor_links=links,
        enrl_cap=state.enrl_cap,
        enrl_tot=state.enrl_tot,
        open_seats=state.open_seats,
        wait_cap=state.wait_cap,
        wait_tot=state.wait_tot,
        reserved_seats=state.reserved_seats,
        days=state.days,
        start_time=state.start_time,
        end_time=state.end_time,
        location=state.location,
        instruction_mode=state.instruction_mode,
        class_status=state.class_status,
        found=found,
        last_checked=checked_at,
        catalog_url=catalog_url(state.term, state.class_nbr),
    )


def stored_section(row: asyncpg.Record) -> SectionView | None:
    """The section in a row of `section` columns (NULL when never found) and `section_missing`'s
    `missing_count` and `last_missing_at` (NULL unless the class search does not list it now)."""
    if row["subject"] is None:
        return None
    state = SectionState(
        term=row["term"],
        class_nbr=row["class_nbr"],
        subject=row["subject"],
        catalog_nbr=row["catalog_nbr"],
        title=row["title"],
        section=row["section"],
        component=row["component"],
        instructors=tuple(row["instructors"]),
        enrl_cap=row["enrl_cap"],
        enrl_tot=row["enrl_tot"],
        open_seats=row["open_seats"],
        wait_cap=row["wait_cap"],
        wait_tot=row["wait_tot"],
        reserved_seats=row["reserved_seats"],
        days=row["days"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        location=row["location"],
        instruction_mode=row["instruction_mode"],
        class_status=row["class_status"],
    )
    missing = row["missing_count"] is not None
    # A "not found" is a check too: show when we last looked, not when we last saw the section.
    checked = max(row["scraped_at"], row["last_missing_at"]) if missing and row["last_missing_at"] else None
    return section_view(state, found=not missing, checked_at=checked or row["scraped_at"])


def watch_view(row: asyncpg.Record) -> WatchView:
    """Build a watch from a row of `watches.SELECT_WATCHES` (see `stored_section`)."""
    missing = row["missing_count"] is not None
    section = stored_section(row)
    return WatchView(
        id=row["id"],
        term=row["term"],
        term_label=term_label(row["term"]),
        class_nbr=row["class_nbr"],
        created_at=row["created_at"],
        catalog_url=catalog_url(row["term"], row["class_nbr"]),
        status="not_found" if missing else ("found" if section is not None else "checking"),
        section=section,
    )


def live_event(live: SectionLive) -> LiveSectionEvent:
    checked_at = datetime.fromtimestamp(live.checked_at, UTC)
    section = (
        None if live.state is None else section_view(live.state, found=live.found, checked_at=checked_at)
    )
    return LiveSectionEvent(
        term=live.term, class_nbr=live.class_nbr, found=live.found, checked_at=checked_at, section=section
    )


SELECT_SECTION = """
SELECT k.term, k.class_nbr, s.subject, s.catalog_nbr, s.title, s.section, s.component, s.instructors,
    s.enrl_cap, s.enrl_tot, s.open_seats, s.wait_cap, s.wait_tot, s.reserved_seats, s.days, s.start_time,
    s.end_time, s.location, s.instruction_mode, s.class_status, s.scraped_at, m.missing_count,
    m.last_missing_at
FROM (SELECT $1::text AS term, $2::text AS class_nbr) AS k
LEFT JOIN section s ON s.term = k.term AND s.class_nbr = k.class_nbr
LEFT JOIN section_missing m ON m.term = k.term AND m.class_nbr = k.class_nbr
"""


@get(
    "/api/v1/sections/{term:str}/{class_nbr:str}",
    responses=answers(
        {
            401: "Not logged in.",
            404: "The section was never found: not checked yet, or not listed in that term.",
            422: "The term or class number is malformed.",
        }
    ),
)
async def preview_section(
    term: str, class_nbr: str, user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> SectionView:
    """A section as last stored, to show before it is watched: 200 with the `section` of a watch (course,
    title, instructors, seats, days and times, `last_checked`; `found` is false when the class search did
    not list it at the last check); 404 when it was never found (`not checked yet`, or not listed in that
    term); 422 for a malformed term or class number; 401 when not logged in. Nothing is looked up: this
    only reads what the checks stored, so it is no way to query the class search."""
    if not is_term(term):
        raise UnprocessableContent(detail="term must be an ASU term code like 2267 (Fall 2026)")
    if not is_class_nbr(class_nbr):
        raise UnprocessableContent(detail="class number must be 5 digits")
    row = await pool.fetchrow(SELECT_SECTION, term, class_nbr)
    assert row is not None  # one row, always: the key joined to what is stored
    if (section := stored_section(row)) is not None:
        return section
    if row["missing_count"] is not None:
        raise NotFoundException(
            detail=f"class {class_nbr} was not listed in {term_label(term)} when we last looked"
        )
    raise NotFoundException(detail="not checked yet: add it and we look it up within minutes")
