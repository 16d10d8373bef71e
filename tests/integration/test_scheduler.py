from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from services.scheduler.app import Scheduler
from shared.events import CheckSection
from shared.messaging import connect_nats
from shared.streams import Topology
from tests.infra import Servers
from tests.jetstream import stream_events


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
