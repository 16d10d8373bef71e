"""When a section that the class search stops listing is retired as gone (pure).

- A section is retired when its consecutive misses reach `RETIRE_AFTER_MISSES`: one miss is a bad moment,
  three windows in a row is a section that is no longer offered. It is retired once; a redelivery of the
  miss that retired it names the same change again (its `change_key` is that miss's snapshot id).
- Not in a not-found storm: when many of the sections checked in the last interval are missing at once,
  the class search is failing, not every one of those sections being deleted. Nobody is retired then; the
  misses keep counting, and the first miss after the storm retires the sections still missing.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.events import SectionChange, SectionState

RETIRE_AFTER_MISSES = 3

# Above this share of the sections checked in the last interval, the misses are the source's fault: ASU
# cancels or deletes a few sections at a time, never a fifth of what students watch.
STORM_PERCENT = 20
# ...and at least this many missing: in a small system (two watched sections, one deleted) one miss is
# already a large share, and must still retire the section.
STORM_MINIMUM = 5


class Miss(NamedTuple):
    """A section's miss as stored (services/detector/store.py), and whether it has retired the section."""

    term: str
    class_nbr: str
    snapshot_id: str
    scraped_at: float
    missing_count: int
    # The miss that retired it; None while it is not retired.
    gone_snapshot_id: str | None


def is_storm(missing: int, checked: int) -> bool:
    """Whether `missing` sections out of `checked` in the last interval is a source fault, not a fact."""
    return missing >= STORM_MINIMUM and missing * 100 > checked * STORM_PERCENT


def due(miss: Miss) -> bool:
    """Missed long enough to be retired, and not retired yet."""
    return miss.gone_snapshot_id is None and miss.missing_count >= RETIRE_AFTER_MISSES


def redelivered(miss: Miss) -> bool:
    """The very miss that retired the section, seen again: its change is announced again, under its name."""
    return miss.gone_snapshot_id == miss.snapshot_id


def unknown_section(term: str, class_nbr: str) -> SectionState:
    """What is known of a section never found: its term and class number."""
    return SectionState(
        term=term,
        class_nbr=class_nbr,
        subject="",
        catalog_nbr="",
        title="",
        enrl_cap=0,
        enrl_tot=0,
        open_seats=0,
    )


def gone_change(miss: Miss, last_seen: SectionState | None, now: float) -> SectionChange:
    """The `section_gone` change of a retiring miss: the section as last seen (or only its number)."""
    state = last_seen or unknown_section(miss.term, miss.class_nbr)
    return SectionChange(
        kind="section_gone",
        change_key=miss.snapshot_id,
        detected_at=now,
        old_open_seats=last_seen.open_seats if last_seen else 0,
        old_instructors=last_seen.instructors if last_seen else (),
        state=state,
        scraped_at=miss.scraped_at,
    )
