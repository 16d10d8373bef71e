"""How a section is shown to a student: one shape for the watch list and for live updates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import asyncpg
import msgspec

from shared.asu import catalog_url, instructor_label, rate_my_professor_url, term_label
from shared.events import SectionLive, SectionState


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


def watch_view(row: asyncpg.Record) -> WatchView:
    """Build a watch from a row of `watches.SELECT_WATCHES` (section columns are NULL when never found,
    missing columns NULL unless the class search does not list it now)."""
    missing = row["missing_count"] is not None
    section = None
    if row["subject"] is not None:
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
        # A "not found" is a check too: show when we last looked, not when we last saw the section.
        checked = (
            max(row["scraped_at"], row["last_missing_at"]) if missing and row["last_missing_at"] else None
        )
        section = section_view(state, found=not missing, checked_at=checked or row["scraped_at"])
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
