from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.detector.changes import Previous, detect, latest_per_section
from shared.events import SectionChange, SectionState
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


def previous_of(state: SectionState) -> Previous:
    """What the store keeps of a snapshot once the next one replaces it."""
    return Previous(state.open_seats, state.instructors, state.class_status, state.wait_cap, state.wait_tot)


def test_a_cancelled_section_with_seats_announces_its_cancellation_not_a_seat() -> None:
    cancelled_with_seats = section_state(open_seats=30, class_status="X", instructors=("Bob",))
    [cancelled] = detect(Previous(0, ("Ada",)), cancelled_with_seats, "c", 1.0)
    assert (cancelled.kind, cancelled.change_key, cancelled.old_open_seats) == ("section_cancelled", "c", 0)


def test_an_open_section_cancelled_is_cancelled_not_filled() -> None:
    cancelled = section_state(open_seats=0, class_status="X")
    assert kinds(detect(Previous(4, ()), cancelled, "c", 0.0)) == ["section_cancelled"]


def test_an_inactive_section_stays_silent_whatever_its_counts_do() -> None:
    inactive = Previous(0, (), "X", 5, 5)
    changed = section_state(open_seats=7, wait_cap=5, wait_tot=0, class_status="X", instructors=("Ada",))
    assert detect(inactive, changed, "s", 0.0) == []


def test_first_sight_of_an_inactive_section_or_of_waitlist_room_is_never_a_change() -> None:
    assert detect(None, section_state(open_seats=5, class_status="X"), "s", 0.0) == []
    assert detect(None, section_state(open_seats=0, wait_cap=5, wait_tot=2), "s", 0.0) == []


def test_a_section_back_from_inactive_with_seats_is_a_new_opening() -> None:
    assert kinds(detect(Previous(9, (), "X"), section_state(open_seats=2), "r", 0.0)) == ["seat_opened"]
    assert detect(Previous(9, (), "X"), section_state(open_seats=0), "r", 0.0) == []


def test_room_on_the_full_waitlist_of_a_full_section_is_waitlist_opened() -> None:
    [opened] = detect(Previous(0, (), "A", 10, 10), section_state(wait_cap=10, wait_tot=9), "w", 0.0)
    assert (opened.kind, opened.change_key, opened.state.wait_tot) == ("waitlist_opened", "w", 9)
    larger = section_state(wait_cap=6, wait_tot=5)
    assert kinds(detect(Previous(0, (), "A", 5, 5), larger, "w", 0.0)) == ["waitlist_opened"]


def test_waitlist_room_that_is_not_news() -> None:
    room = section_state(wait_cap=10, wait_tot=9)
    assert detect(Previous(0, (), "A", 10, 8), room, "w", 0.0) == [], "it had room already"
    assert detect(Previous(0, (), "A", 0, 0), room, "w", 0.0) == [], "no waitlist is not a full one"
    assert kinds(detect(Previous(3, (), "A", 10, 10), room, "w", 0.0)) == ["seat_filled"]
    still_full = section_state(wait_cap=10, wait_tot=10)
    assert detect(Previous(0, (), "A", 10, 10), still_full, "w", 0.0) == []
    cancelled = section_state(wait_cap=10, wait_tot=0, class_status="X")
    assert kinds(detect(Previous(0, (), "A", 10, 10), cancelled, "w", 0.0)) == ["section_cancelled"]


def test_a_section_back_from_inactive_with_waitlist_room_is_waitlist_opened() -> None:
    room = section_state(wait_cap=10, wait_tot=3)
    assert kinds(detect(Previous(0, (), "X", 10, 10), room, "r", 0.0)) == ["waitlist_opened"]


def test_the_same_transition_detected_again_is_the_same_change() -> None:
    previous = Previous(0, (), "A", 4, 4)
    for current in (section_state(class_status="X"), section_state(wait_cap=4, wait_tot=3)):
        first = detect(previous, current, "k", 1.0, scraped_at=0.5)
        assert first == detect(previous, current, "k", 1.0, scraped_at=0.5)
        assert len(first) == 1


section_states = st.builds(
    lambda status, seats, cap, tot, names: section_state(
        class_status=status, open_seats=seats, wait_cap=cap, wait_tot=tot, instructors=names
    ),
    st.sampled_from(["A", "A", "X", "C"]),
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=4),
    st.sampled_from([(), ("Ada",), ("Bob",)]),
)
histories = st.lists(section_states, min_size=1, max_size=40)


def replay(states: list[SectionState]) -> list[list[str]]:
    """The kinds of change each observation yields, in order, as the detector sees them."""
    previous: Previous | None = None
    found: list[list[str]] = []
    for index, state in enumerate(states):
        found.append(kinds(detect(previous, state, f"s{index}", 0.0)))
        previous = previous_of(state)
    return found


def offers_seats(state: SectionState) -> bool:
    return state.class_status == "A" and state.open_seats > 0


@given(histories)
def test_never_anything_on_first_sight(states: list[SectionState]) -> None:
    assert replay(states)[0] == []


@given(histories)
def test_a_cancelled_section_never_opens_and_its_cancellation_comes_alone(
    states: list[SectionState],
) -> None:
    for state, found in zip(states, replay(states), strict=True):
        if state.class_status != "A":
            assert found in ([], ["section_cancelled"])
        if "section_cancelled" in found:
            assert found == ["section_cancelled"]


@given(histories)
def test_section_cancelled_exactly_once_per_active_to_inactive(states: list[SectionState]) -> None:
    cancelled = [i for i, found in enumerate(replay(states)) if "section_cancelled" in found]
    expected = [
        i
        for i in range(1, len(states))
        if states[i - 1].class_status == "A" and states[i].class_status != "A"
    ]
    assert cancelled == expected


@given(histories)
def test_seat_opened_exactly_when_an_active_section_offers_seats_it_did_not(
    states: list[SectionState],
) -> None:
    opened = [i for i, found in enumerate(replay(states)) if "seat_opened" in found]
    expected = [
        i for i in range(1, len(states)) if not offers_seats(states[i - 1]) and offers_seats(states[i])
    ]
    assert opened == expected


@given(histories)
def test_openings_alternate_with_fillings_or_cancellations(states: list[SectionState]) -> None:
    seat_events = [kind for found in replay(states) for kind in found if kind != "instructor_changed"]
    seat_events = [kind for kind in seat_events if kind != "waitlist_opened"]
    # Another opening needs the last one ended (filled or cancelled) ...
    ends = ["ended" if kind != "seat_opened" else kind for kind in seat_events]
    assert all(not (a == b == "seat_opened") for a, b in pairwise(ends))
    # ... and another filling needs an opening in between (a cancellation fills nothing).
    fills = [kind for kind in seat_events if kind != "section_cancelled"]
    assert all(not (a == b == "seat_filled") for a, b in pairwise(fills))


@given(histories)
def test_waitlist_opened_exactly_when_a_full_waitlist_or_an_inactive_section_gets_room(
    states: list[SectionState],
) -> None:
    def room(state: SectionState) -> bool:
        return state.class_status == "A" and state.open_seats == 0 and state.wait_tot < state.wait_cap

    def full(state: SectionState) -> bool:
        return state.class_status == "A" and state.open_seats == 0 and 0 < state.wait_cap <= state.wait_tot

    opened = [i for i, found in enumerate(replay(states)) if "waitlist_opened" in found]
    expected = [
        i
        for i in range(1, len(states))
        if room(states[i]) and (full(states[i - 1]) or states[i - 1].class_status != "A")
    ]
    assert opened == expected
