from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from services.detector.changes import detect
from services.detector.handlers import Detector
from services.detector.retirement import RETIRE_AFTER_MISSES
from services.detector.store import apply_snapshots
from shared.events import SectionChange, SectionLive, SectionNotFound, SectionSnapshot, decode, encode
from shared.streams import Consumer, Topology
from tests.factories import snapshot
from tests.jetstream import fetch, lose_ack, quick_redelivery, stream_events


async def publish(js: JetStreamContext, topology: Topology, event: SectionSnapshot) -> None:
    await js.publish(topology.snapshot_found_subject, encode(event))


async def changes(js: JetStreamContext, topology: Topology) -> list[SectionChange]:
    return [event for _, event in await stream_events(js, topology.changes_stream, SectionChange)]


async def handle_twice(js: JetStreamContext, consumer: Consumer, detector: Detector) -> None:
    """Handle the next snapshot, lose the ack, and handle the server's redelivery of it."""
    [first] = await fetch(js, consumer)
    await detector.handle([lose_ack(first)])
    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    await detector.handle([again])


async def assert_settled(nc: Client, js: JetStreamContext, consumer: Consumer) -> None:
    await nc.flush()  # the acks are published without waiting; the server has them after this round trip
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_first_sight_stores_state_and_emits_nothing(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("a", 1.0, enrl_tot=90))
    await detector.handle(await fetch(js, topology.detector))
    row = await db.fetchrow("SELECT open_seats, prev_open_seats FROM section")
    assert row is not None
    assert (row["open_seats"], row["prev_open_seats"]) == (10, None)
    assert await changes(js, topology) == []


async def test_opening_is_emitted_once_even_when_the_snapshot_is_redelivered(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("full", 1.0, enrl_tot=100))
    await detector.handle(await fetch(js, consumer))
    await publish(js, topology, snapshot("open", 2.0, enrl_tot=97))
    [first] = await fetch(js, consumer)
    await detector.handle([lose_ack(first)])
    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    await detector.handle([again])
    [opened] = await changes(js, topology)
    assert (opened.kind, opened.change_key, opened.old_open_seats, opened.state.open_seats) == (
        "seat_opened",
        "open",
        0,
        3,
    )
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_stale_snapshot_changes_nothing_and_fill_then_reopen_is_a_new_opening(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    for event in (
        snapshot("s1", 1.0, enrl_tot=100),
        snapshot("s2", 2.0, enrl_tot=99),
        snapshot("s0", 1.5, enrl_tot=100),  # arrives late: older than what is stored
        snapshot("s3", 3.0, enrl_tot=100),
        snapshot("s4", 4.0, enrl_tot=98, instructors=("Ada Lovelace",)),
    ):
        await publish(js, topology, event)
        await detector.handle(await fetch(js, topology.detector))
    assert [(c.kind, c.change_key) for c in await changes(js, topology)] == [
        ("seat_opened", "s2"),
        ("seat_filled", "s3"),
        ("seat_opened", "s4"),
        ("instructor_changed", "s4"),
    ]


async def test_live_update_is_published_for_each_stored_snapshot(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    sub = await nc.subscribe(topology.live_wildcard)
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("a", 1.0, enrl_tot=95))
    await detector.handle(await fetch(js, topology.detector))
    message = await sub.next_msg(timeout=5)
    live = decode(message.data, SectionLive)
    assert message.subject == topology.live_section_subject("2271", "12345")
    assert live.found
    assert live.state is not None
    assert live.state.open_seats == 5
    await sub.unsubscribe()


async def test_undecodable_snapshot_goes_to_the_dead_letter_stream(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    await js.publish(topology.snapshot_found_subject, b'{"not": "a snapshot"}')
    await Detector(db, nc, topology).handle(await fetch(js, topology.detector))
    info = await js.stream_info(topology.dead_stream)
    assert info.state.messages == 1


async def test_a_section_not_found_is_recorded_until_it_is_found_again(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    for snapshot_id, at in (("m1", 1.0), ("m2", 2.0)):
        missing = SectionNotFound(snapshot_id=snapshot_id, scraped_at=at, term="2271", class_nbr="12345")
        await js.publish(topology.snapshot_missing_subject, encode(missing))
        await detector.handle(await fetch(js, topology.detector))
    assert await db.fetchval("SELECT missing_count FROM section_missing") == 2
    await publish(js, topology, snapshot("f3", 3.0, enrl_tot=99))
    await detector.handle(await fetch(js, topology.detector))
    assert await db.fetchval("SELECT count(*) FROM section_missing") == 0
    assert await changes(js, topology) == [], "found after being missing is a first sight"


async def test_an_opening_survives_a_failed_publish_even_when_a_newer_snapshot_lands_first(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    # The failed attempt comes back after 2 s, so the newer snapshot is surely handled first.
    detector = Detector(db, nc, topology, dataclasses.replace(consumer, retry_delays=(2.0,)))
    await publish(js, topology, snapshot("s0", 1.0, enrl_tot=100))
    await detector.handle(await fetch(js, consumer))
    # Changes cannot be published: their stream is gone (a real JetStream failure, no responders).
    changes_stream = next(s for s in topology.streams if s.name == topology.changes_stream)
    await js.delete_stream(changes_stream.name)
    await publish(js, topology, snapshot("s1", 2.0, enrl_tot=97))
    [opening] = await fetch(js, consumer)
    await detector.handle([opening])
    await js.add_stream(changes_stream.config())
    # The next window's snapshot is stored before the failed one comes back.
    await publish(js, topology, snapshot("s2", 3.0, enrl_tot=97))
    [newer] = await fetch(js, consumer)
    assert decode(newer.data, SectionSnapshot).snapshot_id == "s2"
    await detector.handle([newer])
    [redelivered] = await fetch(js, consumer)
    assert redelivered.metadata.num_delivered == 2
    await detector.handle([redelivered])
    assert [(c.kind, c.old_open_seats, c.state.open_seats) for c in await changes(js, topology)] == [
        ("seat_opened", 0, 3)
    ]


async def test_a_cancelled_section_with_seats_is_announced_once_as_cancelled_even_when_redelivered(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    # Everyone is dropped from a cancelled section: by its counts it has seats, and none can be taken.
    published = await nc.subscribe(f"{topology.namespace}.change.>")
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("full", 1.0, enrl_tot=100, instructors=("Ada Lovelace",)))
    await detector.handle(await fetch(js, consumer))
    await publish(js, topology, snapshot("cancel", 2.0, enrl_tot=0, class_status="X"))
    await handle_twice(js, consumer, detector)
    [cancelled] = await changes(js, topology)
    assert (cancelled.kind, cancelled.change_key, cancelled.old_open_seats, cancelled.state.class_status) == (
        "section_cancelled",
        "cancel",
        0,
        "X",
    )
    # Both deliveries announced the same transition under the same id; JetStream kept one.
    ids = [(await published.next_msg(timeout=5)).headers for _ in range(2)]
    assert [headers and headers.get("Nats-Msg-Id") for headers in ids] == [
        "section_cancelled:2271:12345:cancel"
    ] * 2
    await published.unsubscribe()
    row = await db.fetchrow("SELECT class_status, prev_class_status FROM section")
    assert row is not None
    assert (row["class_status"], row["prev_class_status"]) == ("X", "A")
    await assert_settled(nc, js, consumer)


async def test_a_cancelled_section_is_told_once_and_opens_again_only_against_a_stored_state(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    for event in (
        snapshot("x1", 1.0, enrl_tot=0, class_status="X"),  # first sight: nothing, seats or not
        snapshot("a2", 2.0, enrl_tot=70),  # back, with seats, against a stored inactive state
        snapshot("x3", 3.0, enrl_tot=70, class_status="X"),
        snapshot("x4", 4.0, enrl_tot=10, class_status="C"),  # still inactive: nothing new
        snapshot("a5", 5.0, enrl_tot=100),  # back, full: nothing to take
        snapshot("a6", 6.0, enrl_tot=95),
    ):
        await publish(js, topology, event)
        await detector.handle(await fetch(js, topology.detector))
    assert [(c.kind, c.change_key) for c in await changes(js, topology)] == [
        ("seat_opened", "a2"),
        ("section_cancelled", "x3"),
        ("seat_opened", "a6"),
    ]


async def test_room_on_a_full_waitlist_is_one_waitlist_opened_even_when_redelivered(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("full", 1.0, enrl_tot=100, wait_cap=10, wait_tot=10))
    await detector.handle(await fetch(js, consumer))
    await publish(js, topology, snapshot("room", 2.0, enrl_tot=100, wait_cap=10, wait_tot=8))
    await handle_twice(js, consumer, detector)
    await publish(js, topology, snapshot("more", 3.0, enrl_tot=100, wait_cap=10, wait_tot=7))
    await detector.handle(await fetch(js, consumer))
    [opened] = await changes(js, topology)
    assert (opened.kind, opened.change_key, opened.state.wait_tot, opened.state.wait_cap) == (
        "waitlist_opened",
        "room",
        8,
        10,
    )
    await assert_settled(nc, js, consumer)


async def test_a_redelivery_of_a_snapshot_stored_before_migration_0004_invents_no_cancellation(
    db: asyncpg.Pool,
) -> None:
    await apply_snapshots(db, [snapshot("s1", 1.0, enrl_tot=100, wait_cap=5, wait_tot=5)])
    cancelled = snapshot("s2", 2.0, enrl_tot=100, wait_cap=5, wait_tot=0, class_status="X")
    await apply_snapshots(db, [cancelled])
    # As a detector of the release before stored it: prev_* of the new columns unknown.
    await db.execute(
        "UPDATE section SET prev_class_status = NULL, prev_wait_cap = NULL, prev_wait_tot = NULL"
    )
    [again] = await apply_snapshots(db, [cancelled])
    assert again.previous is not None
    assert detect(again.previous, cancelled.state, cancelled.snapshot_id, 0.0) == []


# Any moment: the retirement rules compare stored times with each other, never with the clock.
T0 = 1_790_000_000.0


def window(topology: Topology, n: int) -> float:
    """A moment in the n-th check window after T0."""
    return T0 + n * topology.check_interval_seconds


def not_found(snapshot_id: str, scraped_at: float, class_nbr: str = "12345") -> SectionNotFound:
    return SectionNotFound(snapshot_id=snapshot_id, scraped_at=scraped_at, term="2271", class_nbr=class_nbr)


async def watch(db: asyncpg.Pool, sections: list[tuple[str, str]]) -> None:
    user_id = await db.fetchval(
        "INSERT INTO app_user (email, password_hash) VALUES ('w@x.edu', 'x') RETURNING id"
    )
    for term, class_nbr in sections:
        await db.execute(
            "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)", user_id, term, class_nbr
        )


async def check_window(
    js: JetStreamContext,
    topology: Topology,
    detector: Detector,
    events: list[SectionSnapshot | SectionNotFound],
) -> None:
    """One window's observations, handled as one batch."""
    for event in events:
        subject = (
            topology.snapshot_missing_subject
            if isinstance(event, SectionNotFound)
            else topology.snapshot_found_subject
        )
        await js.publish(subject, encode(event))
    await detector.handle(await fetch(js, topology.detector, count=len(events)))


async def to_check(db: asyncpg.Pool) -> list[tuple[str, str]]:
    return [
        (r["term"], r["class_nbr"]) for r in await db.fetch("SELECT term, class_nbr FROM sections_to_check")
    ]


def storms() -> float:
    return REGISTRY.get_sample_value("pmc_not_found_storms_total") or 0.0


async def test_three_misses_in_three_windows_retire_a_section_once_as_it_was_last_seen(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    await watch(db, [("2271", "12345")])
    detector = Detector(db, nc, topology)
    last_seen = snapshot("seen", window(topology, 0), enrl_tot=97, instructors=("Ada Lovelace",))
    await check_window(js, topology, detector, [last_seen])
    for n in range(1, RETIRE_AFTER_MISSES + 2):  # one more miss after the retiring one
        await check_window(js, topology, detector, [not_found(f"m{n}", window(topology, n))])
    [gone] = await changes(js, topology)
    assert (gone.kind, gone.change_key, gone.scraped_at) == ("section_gone", "m3", window(topology, 3))
    assert gone.state == last_seen.state
    assert (gone.old_open_seats, gone.old_instructors) == (3, ("Ada Lovelace",))
    row = await db.fetchrow("SELECT missing_count, gone_at, gone_snapshot_id FROM section_missing")
    assert row is not None
    assert (row["missing_count"], row["gone_snapshot_id"]) == (4, "m3")
    assert row["gone_at"] is not None
    assert await to_check(db) == []


async def test_two_misses_retire_nobody(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    for n in range(1, RETIRE_AFTER_MISSES):
        await check_window(js, topology, detector, [not_found(f"m{n}", window(topology, n))])
    assert await db.fetchval("SELECT gone_at FROM section_missing") is None
    assert await changes(js, topology) == []


async def test_a_redelivered_retiring_miss_announces_the_same_change_under_the_same_id(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    published = await nc.subscribe(f"{topology.namespace}.change.>")
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    await publish(js, topology, snapshot("seen", window(topology, 0)))
    await detector.handle(await fetch(js, consumer))
    for n in range(1, RETIRE_AFTER_MISSES + 1):
        await js.publish(topology.snapshot_missing_subject, encode(not_found(f"m{n}", window(topology, n))))
        if n < RETIRE_AFTER_MISSES:
            await detector.handle(await fetch(js, consumer))
    await handle_twice(js, consumer, detector)
    ids = [(await published.next_msg(timeout=5)).headers for _ in range(2)]
    assert [headers and headers.get("Nats-Msg-Id") for headers in ids] == ["section_gone:2271:12345:m3"] * 2
    await published.unsubscribe()
    assert [(c.kind, c.change_key) for c in await changes(js, topology)] == [("section_gone", "m3")]
    assert await db.fetchval("SELECT gone_snapshot_id FROM section_missing") == "m3"
    await assert_settled(nc, js, consumer)


async def test_a_retired_section_found_again_is_checked_again_and_the_usual_rules_apply(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    await watch(db, [("2271", "12345")])
    detector = Detector(db, nc, topology)
    await check_window(js, topology, detector, [snapshot("full", window(topology, 0), enrl_tot=100)])
    for n in range(1, RETIRE_AFTER_MISSES + 1):
        await check_window(js, topology, detector, [not_found(f"m{n}", window(topology, n))])
    assert await to_check(db) == []
    # Back as it was: no news about coming back.
    await check_window(js, topology, detector, [snapshot("back", window(topology, 4), enrl_tot=100)])
    assert await db.fetchval("SELECT count(*) FROM section_missing") == 0
    assert await to_check(db) == [("2271", "12345")]
    await check_window(js, topology, detector, [snapshot("open", window(topology, 5), enrl_tot=98)])
    assert [(c.kind, c.change_key) for c in await changes(js, topology)] == [
        ("section_gone", "m3"),
        ("seat_opened", "open"),
    ]


async def test_a_section_never_found_is_retired_by_its_number(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    await watch(db, [("2271", "12345")])
    detector = Detector(db, nc, topology)
    for n in range(1, RETIRE_AFTER_MISSES + 1):
        await check_window(js, topology, detector, [not_found(f"m{n}", window(topology, n))])
    [gone] = await changes(js, topology)
    assert (gone.kind, gone.change_key, gone.old_open_seats, gone.old_instructors) == (
        "section_gone",
        "m3",
        0,
        (),
    )
    state = gone.state
    assert (state.term, state.class_nbr, state.subject, state.catalog_nbr, state.title) == (
        "2271",
        "12345",
        "",
        "",
        "",
    )
    assert await to_check(db) == []


async def test_a_not_found_storm_retires_nobody_and_the_first_miss_after_it_retires(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    sections = [f"1234{n}" for n in range(10)]
    await watch(db, [("2271", class_nbr) for class_nbr in sections])
    missing, present = sections[:5], sections[5:]
    detector = Detector(db, nc, topology)
    await check_window(
        js, topology, detector, [snapshot(f"s0-{c}", window(topology, 0), class_nbr=c) for c in sections]
    )
    storms_before = storms()
    for n in range(1, RETIRE_AFTER_MISSES + 1):
        at = window(topology, n)
        await check_window(
            js,
            topology,
            detector,
            [not_found(f"m{n}-{c}", at, class_nbr=c) for c in missing]
            + [snapshot(f"s{n}-{c}", at, class_nbr=c) for c in present],
        )
    # 5 of the 10 sections checked in the interval went missing at once: the source's fault.
    assert storms() == storms_before + 1
    assert await db.fetchval("SELECT count(*) FROM section_missing WHERE gone_at IS NOT NULL") == 0
    assert await changes(js, topology) == []
    assert len(await to_check(db)) == 10

    # The class search is back: all but one of them are found again; the one still missing is retired.
    at = window(topology, RETIRE_AFTER_MISSES + 1)
    deleted = missing[0]
    await check_window(
        js,
        topology,
        detector,
        [not_found("deleted", at, class_nbr=deleted)]
        + [snapshot(f"back-{c}", at, class_nbr=c) for c in sections if c != deleted],
    )
    assert [(c.kind, c.state.class_nbr, c.change_key) for c in await changes(js, topology)] == [
        ("section_gone", deleted, "deleted")
    ]
    assert storms() == storms_before + 1
    assert sorted(c for _, c in await to_check(db)) == sections[1:]


async def test_the_term_end_is_stored_with_every_snapshot(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    detector = Detector(db, nc, topology)
    await check_window(js, topology, detector, [snapshot("a", window(topology, 0), term_end="2027-05-08")])
    assert await db.fetchval("SELECT term_end FROM section") == date(2027, 5, 8)
    assert await db.fetchval("SELECT term_end FROM term_calendar WHERE term = '2271'") == date(2027, 5, 8)
    await check_window(js, topology, detector, [snapshot("b", window(topology, 1), term_end="")])
    assert await db.fetchval("SELECT term_end FROM section") is None
    # A date the detector cannot read is left out; the snapshot is stored all the same.
    await check_window(js, topology, detector, [snapshot("c", window(topology, 2), term_end="May 8, 2027")])
    row = await db.fetchrow("SELECT snapshot_id, term_end FROM section")
    assert row is not None
    assert (row["snapshot_id"], row["term_end"]) == ("c", None)


async def test_sections_of_a_term_that_ended_are_no_longer_checked(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    today = date.today()
    await watch(db, [("2261", "11111"), ("2264", "22222"), ("2264", "33333"), ("2267", "44444")])
    detector = Detector(db, nc, topology)
    await check_window(
        js,
        topology,
        detector,
        [
            snapshot(
                "ended",
                window(topology, 0),
                term="2261",
                class_nbr="11111",
                term_end=str(today - timedelta(1)),
            ),
            snapshot("today", window(topology, 0), term="2264", class_nbr="22222", term_end=str(today)),
            # No end given for this one: the term's other sections tell when it ends.
            snapshot("same-term", window(topology, 0), term="2264", class_nbr="33333"),
        ],
    )
    # A term ends the day after its last day; a term whose end is not known yet is still checked.
    assert sorted(await to_check(db)) == [("2264", "22222"), ("2264", "33333"), ("2267", "44444")]


async def samples(db: asyncpg.Pool, class_nbr: str = "12345") -> list[tuple[float, int, int, int]]:
    rows = await db.fetch(
        "SELECT extract(epoch FROM at)::float8 AS at, open_seats, enrl_cap, enrl_tot FROM section_sample"
        " WHERE class_nbr = $1 ORDER BY at",
        class_nbr,
    )
    return [(r["at"], r["open_seats"], r["enrl_cap"], r["enrl_tot"]) for r in rows]


async def test_seat_history_has_a_sample_per_change_of_seats_and_none_twice_for_a_redelivery(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    for event in (
        snapshot("first", window(topology, 0), enrl_tot=100),
        snapshot("same", window(topology, 1), enrl_tot=100, instructors=("Ada Lovelace",)),
        snapshot("late", window(topology, 0) - 1, enrl_tot=90),  # older than what is stored: ignored
    ):
        await publish(js, topology, event)
        await detector.handle(await fetch(js, consumer))
    await publish(js, topology, snapshot("opened", window(topology, 2), enrl_tot=97))
    await handle_twice(js, consumer, detector)
    await publish(js, topology, snapshot("bigger", window(topology, 3), enrl_cap=110, enrl_tot=107))
    await detector.handle(await fetch(js, consumer))
    assert await samples(db) == [
        (window(topology, 0), 0, 100, 100),  # first sight
        (window(topology, 2), 3, 100, 97),
        (window(topology, 3), 3, 110, 107),  # same open seats, more room: a change of seats too
    ]
    assert await db.fetchval("SELECT count(*) FROM section_seat_history") == 3
    await assert_settled(nc, js, consumer)


async def test_seat_history_keeps_the_latest_200_samples_of_a_section(db: asyncpg.Pool) -> None:
    # 200 stored samples, one a minute, then a snapshot that changes the seats.
    await db.execute(
        "INSERT INTO section_sample (term, class_nbr, at, open_seats, enrl_cap, enrl_tot)"
        " SELECT '2271', '12345', to_timestamp($1 + n * 60), n % 2, 100, 100 - n % 2"
        " FROM generate_series(0, 199) AS n",
        T0,
    )
    await db.execute(
        "INSERT INTO section_sample (term, class_nbr, at, open_seats, enrl_cap, enrl_tot)"
        " VALUES ('2271', '54321', to_timestamp($1), 0, 100, 100)",
        T0,
    )
    await apply_snapshots(db, [snapshot("s1", T0 + 200 * 60, enrl_tot=95)])
    kept = await samples(db)
    assert len(kept) == 200
    assert kept[0][0] == T0 + 60, "the oldest one made room"
    assert kept[-1] == (T0 + 200 * 60, 5, 100, 95)
    assert len(await samples(db, "54321")) == 1, "other sections are not touched"


async def test_seat_history_keeps_180_days_and_one_recent_point_for_seats_that_never_move(
    db: asyncpg.Pool,
) -> None:
    day = 86400.0
    await apply_snapshots(db, [snapshot("s0", T0, enrl_tot=100)])
    await apply_snapshots(db, [snapshot("s1", T0 + 10 * day, enrl_tot=99)])
    await apply_snapshots(db, [snapshot("s2", T0 + 100 * day, enrl_tot=99)])
    assert [at for at, *_ in await samples(db)] == [T0, T0 + 10 * day]
    # 185 days on, the first sample is older than 180 days: it goes.
    await apply_snapshots(db, [snapshot("s3", T0 + 185 * day, enrl_tot=99)])
    assert [at for at, *_ in await samples(db)] == [T0 + 10 * day]
    # The seats never moved again: the last sample would age out, so the snapshot becomes the new one.
    await apply_snapshots(db, [snapshot("s4", T0 + 191 * day, enrl_tot=99)])
    assert await samples(db) == [(T0 + 191 * day, 1, 100, 99)]
