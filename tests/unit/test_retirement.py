from __future__ import annotations

import pytest

from services.detector.retirement import (
    RETIRE_AFTER_MISSES,
    STORM_MINIMUM,
    Miss,
    due,
    gone_change,
    is_storm,
    redelivered,
)
from tests.factories import section_state


def miss(missing_count: int, gone_snapshot_id: str | None = None, snapshot_id: str = "m3") -> Miss:
    return Miss(
        term="2271",
        class_nbr="12345",
        snapshot_id=snapshot_id,
        scraped_at=120.0,
        missing_count=missing_count,
        gone_snapshot_id=gone_snapshot_id,
    )


@pytest.mark.parametrize(
    ("missing", "checked", "storm"),
    [
        (5, 25, False),  # exactly 20 %: not a storm
        (5, 24, True),  # just above 20 %
        (6, 30, False),
        (7, 30, True),
        (4, 4, False),  # everything missing, but fewer than the minimum: a small system retires
        (5, 5, True),
        (5, 0, True),  # missing with nothing else checked
        (0, 0, False),
        (1, 2, False),  # one of two watched sections deleted: retired
        (100, 1000, False),
        (201, 1000, True),
    ],
)
def test_a_storm_is_more_than_a_fifth_of_the_checked_sections_and_at_least_five(
    missing: int, checked: int, storm: bool
) -> None:
    assert is_storm(missing, checked) is storm


def test_the_minimum_alone_decides_below_it() -> None:
    assert not is_storm(STORM_MINIMUM - 1, 0)
    assert is_storm(STORM_MINIMUM, 0)


def test_a_section_is_due_at_the_third_miss_and_only_until_it_is_retired() -> None:
    assert not due(miss(RETIRE_AFTER_MISSES - 1))
    assert due(miss(RETIRE_AFTER_MISSES))
    # Held back by a storm, the count goes on: the next miss retires it.
    assert due(miss(RETIRE_AFTER_MISSES + 2))
    assert not due(miss(RETIRE_AFTER_MISSES, gone_snapshot_id="m3"))
    assert not due(miss(RETIRE_AFTER_MISSES + 1, gone_snapshot_id="m3", snapshot_id="m4"))


def test_only_the_retiring_miss_itself_is_announced_again() -> None:
    assert redelivered(miss(RETIRE_AFTER_MISSES, gone_snapshot_id="m3"))
    assert not redelivered(miss(RETIRE_AFTER_MISSES + 1, gone_snapshot_id="m3", snapshot_id="m4"))
    assert not redelivered(miss(RETIRE_AFTER_MISSES))


def test_the_gone_change_carries_the_section_as_last_seen() -> None:
    seen = section_state(enrl_tot=97, instructors=("Ada Lovelace",), term_end="2027-05-08")
    change = gone_change(miss(RETIRE_AFTER_MISSES), seen, now=130.0)
    assert (change.kind, change.change_key, change.detected_at, change.scraped_at) == (
        "section_gone",
        "m3",
        130.0,
        120.0,
    )
    assert change.state == seen
    assert (change.old_open_seats, change.old_instructors) == (3, ("Ada Lovelace",))


def test_a_section_never_seen_is_named_by_its_term_and_number() -> None:
    change = gone_change(miss(RETIRE_AFTER_MISSES), None, now=130.0)
    state = change.state
    assert (state.term, state.class_nbr, state.subject, state.catalog_nbr, state.title) == (
        "2271",
        "12345",
        "",
        "",
        "",
    )
    assert (state.enrl_cap, state.open_seats, change.old_open_seats, change.old_instructors) == (0, 0, 0, ())
