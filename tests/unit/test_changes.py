from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.detector.changes import Previous, detect, latest_per_section
from shared.events import SectionChange
from tests.factories import section_state, snapshot


def kinds(changes: list[SectionChange]) -> list[str]:
    return [c.kind for c in changes]


def test_first_sight_is_never_a_change() -> None:
    assert detect(None, section_state(open_seats=5, instructors=("Ada Lovelace",)), "s1", 0.0) == []


def test_zero_to_open_is_one_seat_opened_carrying_the_old_state() -> None:
    [opened] = detect(Previous(0, ()), section_state(open_seats=3), "s2", 9.0)
    assert (opened.kind, opened.change_key, opened.old_open_seats, opened.state.open_seats) == (
        "seat_opened",
        "s2",
        0,
        3,
    )


def test_open_to_more_open_is_not_news() -> None:
    assert detect(Previous(2, ()), section_state(open_seats=5), "s", 0.0) == []


def test_open_to_zero_is_seat_filled() -> None:
    assert kinds(detect(Previous(2, ()), section_state(open_seats=0), "s", 0.0)) == ["seat_filled"]


def test_staff_to_named_and_named_to_other_name_are_instructor_changes() -> None:
    assert kinds(detect(Previous(0, ()), section_state(instructors=("Ada",)), "s", 0.0)) == [
        "instructor_changed"
    ]
    assert kinds(detect(Previous(0, ("Ada",)), section_state(instructors=("Bob",)), "s", 0.0)) == [
        "instructor_changed"
    ]


def test_named_to_staff_or_same_names_reordered_is_not_a_change() -> None:
    assert detect(Previous(0, ("Ada",)), section_state(instructors=()), "s", 0.0) == []
    assert detect(Previous(0, ("Ada", "Bob")), section_state(instructors=("Bob", "Ada")), "s", 0.0) == []


def test_a_seat_and_an_instructor_in_one_snapshot_are_two_changes() -> None:
    changes = detect(Previous(0, ()), section_state(open_seats=1, instructors=("Ada",)), "s", 0.0)
    assert sorted(kinds(changes)) == ["instructor_changed", "seat_opened"]


def test_latest_per_section_keeps_the_newest_observation() -> None:
    older = snapshot("a", 1.0, open_seats=0)
    newer = snapshot("b", 2.0, open_seats=4)
    other = snapshot("c", 1.5, class_nbr="54321")
    assert {s.snapshot_id for s in latest_per_section([newer, other, older])} == {"b", "c"}


seat_counts = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40)
instructor_lists = st.lists(
    st.lists(st.sampled_from(["Ada", "Bob", "Cy"]), max_size=2, unique=True).map(tuple),
    min_size=1,
    max_size=40,
)


@given(seat_counts)
def test_exactly_one_seat_opened_per_zero_to_open_transition(counts: list[int]) -> None:
    previous: Previous | None = None
    opened: list[int] = []
    for index, count in enumerate(counts):
        changes = detect(previous, section_state(open_seats=count), f"s{index}", 0.0)
        if previous is None:
            assert changes == []
        opened += [index for c in changes if c.kind == "seat_opened"]
        previous = Previous(count, ())
    expected = [i for i in range(1, len(counts)) if counts[i - 1] == 0 and counts[i] > 0]
    assert opened == expected


@given(seat_counts)
def test_openings_and_fillings_alternate(counts: list[int]) -> None:
    previous: Previous | None = None
    events: list[str] = []
    for index, count in enumerate(counts):
        events += kinds(detect(previous, section_state(open_seats=count), f"s{index}", 0.0))
        previous = Previous(count, ())
    assert all(a != b for a, b in pairwise(events))


@given(instructor_lists)
def test_instructor_changes_only_when_a_named_set_differs(lists: list[tuple[str, ...]]) -> None:
    previous: Previous | None = None
    for index, names in enumerate(lists):
        changes = detect(previous, section_state(instructors=names), f"s{index}", 0.0)
        expected = previous is not None and bool(names) and set(names) != set(previous.instructors)
        assert kinds(changes) == (["instructor_changed"] if expected else [])
        previous = Previous(0, names)
