from __future__ import annotations

import dataclasses

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.detector.changes import detect
from services.detector.handlers import Detector
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
