"""Builders of domain values for tests."""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.terms import arizona_today, upcoming_terms
from shared.events import SectionChange, SectionSnapshot, SectionState

# The term students are registering for today: the API refuses watches of ended terms, so tests that add
# watches through it use this one instead of a code that ages out.
OPEN_TERM = next(term for term in upcoming_terms(arizona_today()) if term.default)


def section_state(**overrides: Any) -> SectionState:
    values: dict[str, Any] = {
        "term": "2271",
        "class_nbr": "12345",
        "subject": "CSE",
        "catalog_nbr": "310",
        "title": "Data Structures and Algorithms",
        "section": "1001",
        "component": "LEC",
        "instructors": (),
        "enrl_cap": 100,
        "enrl_tot": 100,
        "open_seats": 0,
        "days": "M W",
        "start_time": "4:30 PM",
        "end_time": "5:45 PM",
        "location": "TEMPE",
    }
    values.update(overrides)
    if "open_seats" not in overrides:
        values["open_seats"] = max(0, values["enrl_cap"] - values["enrl_tot"])
    return msgspec.convert(values, SectionState)


def snapshot(snapshot_id: str, scraped_at: float, **overrides: Any) -> SectionSnapshot:
    return SectionSnapshot(snapshot_id=snapshot_id, scraped_at=scraped_at, state=section_state(**overrides))


def change(kind: str = "seat_opened", change_key: str = "k1", **overrides: Any) -> SectionChange:
    return msgspec.convert(
        {
            "kind": kind,
            "change_key": change_key,
            "detected_at": 1.0,
            "old_open_seats": 0,
            "old_instructors": [],
            "state": msgspec.to_builtins(section_state(**overrides)),
        },
        SectionChange,
    )
