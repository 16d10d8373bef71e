"""The rules that decide what changed between two observations of a section (pure).

- Never anything on first sight: with no previous state there is no change.
- Only an active section (CLASSSTAT `A`) offers anything: an inactive one has no seat to take and no
  waitlist to join, whatever its counts say.
- `section_cancelled` when an active section turns inactive, and nothing else in that snapshot: the
  cancellation is the news, and it ends whatever was open.
- `seat_opened` when an active section has open seats and had none to offer before (0 seats, or inactive:
  a section that comes back with seats is a new opening); `seat_filled` when an active section's open
  seats go back to 0.
- `waitlist_opened` when a full active section has room on its waitlist where, before, the section was
  full and so was its waitlist (a cap above 0), or the section was inactive. A waitlist that has room
  while seats are open, or that a full section gains (cap 0 → more), is not news.
- `instructor_changed` when a named instructor appears where there was Staff, or the names change;
  a named instructor becoming Staff again is not news to a student.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from shared.events import ChangeKind, SectionChange, SectionSnapshot, SectionState

ACTIVE = "A"


class Previous(NamedTuple):
    """What a snapshot replaced (services/detector/store.py keeps it as prev_*)."""

    open_seats: int
    instructors: tuple[str, ...]
    class_status: str = ACTIVE
    wait_cap: int = 0
    wait_tot: int = 0


class _Offer(Protocol):
    """What decides whether a section offers a seat or a waitlist place (a Previous or a SectionState)."""

    @property
    def class_status(self) -> str: ...
    @property
    def open_seats(self) -> int: ...
    @property
    def wait_cap(self) -> int: ...
    @property
    def wait_tot(self) -> int: ...


def is_active(section: _Offer) -> bool:
    return section.class_status == ACTIVE


def has_seats(section: _Offer) -> bool:
    return is_active(section) and section.open_seats > 0


def waitlist_has_room(section: _Offer) -> bool:
    """A full active section whose waitlist can still be joined (cap 0: it has no waitlist)."""
    return is_active(section) and section.open_seats == 0 and section.wait_tot < section.wait_cap


def waitlist_is_full(section: _Offer) -> bool:
    return (
        is_active(section)
        and section.open_seats == 0
        and section.wait_cap > 0
        and section.wait_tot >= section.wait_cap
    )


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

    def change(kind: ChangeKind) -> SectionChange:
        return SectionChange(
            kind=kind,
            change_key=change_key,
            detected_at=now,
            old_open_seats=previous.open_seats,
            old_instructors=previous.instructors,
            state=current,
            scraped_at=now if scraped_at is None else scraped_at,
        )

    if not is_active(current):
        return [change("section_cancelled")] if is_active(previous) else []
    changes: list[SectionChange] = []
    if has_seats(current) and not has_seats(previous):
        changes.append(change("seat_opened"))
    elif has_seats(previous) and current.open_seats == 0:
        changes.append(change("seat_filled"))
    if waitlist_has_room(current) and (waitlist_is_full(previous) or not is_active(previous)):
        changes.append(change("waitlist_opened"))
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
