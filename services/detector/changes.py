"""The rules that decide what changed between two observations of a section (pure).

- Never anything on first sight: with no previous state there is no change.
- `seat_opened` when open seats go from 0 to more than 0; `seat_filled` when they go back to 0.
- `instructor_changed` when a named instructor appears where there was Staff, or the names change;
  a named instructor becoming Staff again is not news to a student.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.events import SectionChange, SectionSnapshot, SectionState


class Previous(NamedTuple):
    open_seats: int
    instructors: tuple[str, ...]


def detect(
    previous: Previous | None,
    current: SectionState,
    change_key: str,
    now: float,
    *,
    scraped_at: float | None = None,
) -> list[SectionChange]:
    if previous is None:
        return []
    changes: list[SectionChange] = []

    def change(kind: str) -> SectionChange:
        return SectionChange(
            kind=kind,  # type: ignore[arg-type]
            change_key=change_key,
            detected_at=now,
            old_open_seats=previous.open_seats,
            old_instructors=previous.instructors,
            state=current,
            scraped_at=now if scraped_at is None else scraped_at,
        )

    if previous.open_seats == 0 and current.open_seats > 0:
        changes.append(change("seat_opened"))
    elif previous.open_seats > 0 and current.open_seats == 0:
        changes.append(change("seat_filled"))
    if current.instructors and set(current.instructors) != set(previous.instructors):
        changes.append(change("instructor_changed"))
    return changes


def latest_per_section(snapshots: list[SectionSnapshot]) -> list[SectionSnapshot]:
    """One snapshot per section, the newest: one statement cannot update a row twice, and an older
    observation in the same batch is superseded anyway."""
    latest: dict[tuple[str, str], SectionSnapshot] = {}
    for snapshot in snapshots:
        key = (snapshot.state.term, snapshot.state.class_nbr)
        if key not in latest or snapshot.scraped_at >= latest[key].scraped_at:
            latest[key] = snapshot
    return list(latest.values())
