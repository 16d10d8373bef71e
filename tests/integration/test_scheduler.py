from __future__ import annotations

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.detector.handlers import Detector
from services.detector.store import apply_snapshots, record_missing
from services.scheduler.app import Scheduler
from services.scheduler.sections import GONE_RECHECK_WINDOWS
from shared.events import CheckCourse, CheckSection, SectionChange, SectionNotFound, encode
from shared.freshness import freshness
from shared.messaging import connect_nats
from shared.streams import Topology
from tests.factories import snapshot
from tests.infra import Servers
from tests.jetstream import fetch, lose_ack, quick_redelivery, stream_events


async def add_watches(db: asyncpg.Pool, sections: list[tuple[str, str]]) -> None:
    user_id = await db.fetchval(
        "INSERT INTO app_user (email, password_hash) VALUES ('s@x.edu', 'x') RETURNING id"
    )
    for term, class_nbr in sections:
        await db.execute(
            "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)", user_id, term, class_nbr
        )


async def test_two_scheduler_replicas_publish_each_section_once_per_window(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, servers: Servers
) -> None:
    await add_watches(db, [("2271", "12345"), ("2271", "54321"), ("2274", "12345")])
    second_connection = await connect_nats(servers.nats_url, "second-scheduler")
    try:
        now = 1_900_000_000.0
        first = await Scheduler(db, js, topology).run_cycle(now)
        second = await Scheduler(db, second_connection.jetstream(), topology).run_cycle(now + 5)
    finally:
        await second_connection.close()
    assert (first.sections, first.published, first.duplicates) == (3, 3, 0)
    assert (second.published, second.duplicates) == (0, 3)
    checks = [event for _, event in await stream_events(js, topology.checks_stream, CheckSection)]
    # Never seen: each is looked up by its class number.
    assert sorted((c.term, c.class_nbr) for c in checks) == [
        ("2271", "12345"),
        ("2271", "54321"),
        ("2274", "12345"),
    ]
    assert {c.window for c in checks} == {topology.window_of(now)}


async def test_next_window_publishes_again_and_a_section_watched_twice_is_checked_once(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    await add_watches(db, [("2271", "12345")])
    other = await db.fetchval(
        "INSERT INTO app_user (email, password_hash) VALUES ('t@x.edu', 'x') RETURNING id"
    )
    await db.execute("INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, '2271', '12345')", other)
    scheduler = Scheduler(db, js, topology)
    now = 1_900_000_000.0
    assert (await scheduler.run_cycle(now)).published == 1
    assert (await scheduler.run_cycle(now + topology.check_interval_seconds)).published == 1


async def checked(js: JetStreamContext, topology: Topology, window: int) -> list[str]:
    """The class numbers the checks of `window` ask about, by class number or in their course."""
    sections = await stream_events(js, topology.checks_stream, CheckSection, topology.check_subject)
    courses = await stream_events(js, topology.checks_stream, CheckCourse, topology.check_course_subject)
    return sorted(
        [c.class_nbr for _, c in sections if c.window == window]
        + [nbr for _, c in courses if c.window == window for nbr in c.class_nbrs]
    )


async def test_a_cycle_skips_sections_stored_as_inactive_and_checks_them_again_once_active(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    await add_watches(db, [("2271", n) for n in ("10001", "10002", "10003", "10004", "10005")])
    await apply_snapshots(
        db,
        [
            snapshot("a", 1.0, class_nbr="10001"),
            snapshot("x", 1.0, class_nbr="10002", class_status="X"),
            snapshot("c", 1.0, class_nbr="10003", class_status="C", enrl_tot=0),
        ],
    )
    # 10004 was never checked; 10005 is not found. Neither is known to be inactive, so both are checked.
    await record_missing(
        db, [SectionNotFound(snapshot_id="m", scraped_at=1.0, term="2271", class_nbr="10005")]
    )
    scheduler = Scheduler(db, js, topology)
    now = 1_900_000_000.0
    first = await scheduler.run_cycle(now)
    assert (first.sections, first.published) == (3, 3)
    assert await checked(js, topology, topology.window_of(now)) == ["10001", "10004", "10005"]
    # Looked up again anyway (a new watch is looked up at once) and active again: back in the cycle.
    await apply_snapshots(db, [snapshot("back", 2.0, class_nbr="10002")])
    later = now + topology.check_interval_seconds
    # 10001 and 10002 share a course: one check for both, and one each for the two never seen.
    assert (await scheduler.run_cycle(later)).published == 3
    assert await checked(js, topology, topology.window_of(later)) == ["10001", "10002", "10004", "10005"]


async def test_a_cancellation_redelivered_to_the_detector_is_told_once_and_ends_the_checks(
    db: asyncpg.Pool, nc: Client, js: JetStreamContext, topology: Topology
) -> None:
    await add_watches(db, [("2271", "12345"), ("2271", "54321")])
    consumer = await quick_redelivery(js, topology, topology.detector)
    detector = Detector(db, nc, topology)
    for event in (snapshot("seen", 1.0), snapshot("other", 1.0, class_nbr="54321")):
        await js.publish(topology.snapshot_found_subject, encode(event))
    await detector.handle(await fetch(js, consumer, count=2))
    await js.publish(
        topology.snapshot_found_subject, encode(snapshot("cancel", 2.0, enrl_tot=0, class_status="X"))
    )
    [first] = await fetch(js, consumer)
    await detector.handle([lose_ack(first)])
    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    await detector.handle([again])
    told = [event for _, event in await stream_events(js, topology.changes_stream, SectionChange)]
    assert [(c.kind, c.state.class_nbr, c.change_key) for c in told] == [
        ("section_cancelled", "12345", "cancel")
    ]

    # Two replicas (or a restart) in the same window: neither checks the cancelled section.
    now = 1_900_000_000.0
    scheduler = Scheduler(db, js, topology)
    first_run, second_run = await scheduler.run_cycle(now), await scheduler.run_cycle(now + 1)
    assert (first_run.sections, first_run.published, second_run.published, second_run.duplicates) == (
        1,
        1,
        0,
        1,
    )
    assert await checked(js, topology, topology.window_of(now)) == ["54321"]
    # A section no longer checked does not age into the stale-sections alert.
    state = await freshness(db)
    assert (state.checked, state.unchecked) == (1, 0)


async def test_sections_of_ended_terms_are_not_checked_and_gone_ones_only_hourly(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    await add_watches(db, [("2271", "10001"), ("2271", "10002"), ("2261", "20001"), ("2261", "20002")])
    await apply_snapshots(
        db,
        [
            snapshot("a", 1.0, class_nbr="10001"),
            snapshot("b", 1.0, class_nbr="10002"),
            # Spring 2026 ended on its last day: every section of the term is done, seen or not.
            snapshot("c", 1.0, term="2261", class_nbr="20001", term_end="2026-05-08"),
        ],
    )
    await db.execute(
        "INSERT INTO section_missing (term, class_nbr, snapshot_id, missing_count, first_missing_at,"
        " last_missing_at, gone_at, gone_snapshot_id) VALUES ('2271', '10002', 'm3', 3, now(), now(),"
        " now(), 'm3')"
    )
    scheduler = Scheduler(db, js, topology)
    interval = topology.check_interval_seconds
    ordinary = (GONE_RECHECK_WINDOWS * 1000 + 1) * interval
    hourly = (GONE_RECHECK_WINDOWS * 1001) * interval
    assert (await scheduler.run_cycle(ordinary)).sections == 1
    assert await checked(js, topology, topology.window_of(ordinary)) == ["10001"]
    assert (await scheduler.run_cycle(hourly)).sections == 2
    assert await checked(js, topology, topology.window_of(hourly)) == ["10001", "10002"]
    state = await freshness(db)
    assert state.checked + state.unchecked == 1
