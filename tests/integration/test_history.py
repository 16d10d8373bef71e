"""Seat history as the gateway reads it: stored by the detector's own statement, read through the
`section_seat_history` view, for the API (own watches only) and for the dashboard's sparklines."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from services.detector.store import apply_snapshots
from services.gateway.app import create_app
from services.gateway.history import Sample, seat_history
from services.gateway.sessions import start_session
from shared.settings import Settings
from tests.factories import snapshot

Client = AsyncTestClient[Litestar]
DAY = 86400.0


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    keys = [key async for key in redis_client.scan_iter(f"{settings.namespace}:*")]
    if keys:
        await redis_client.delete(*keys)


async def student(
    db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings, email: str
) -> tuple[int, str]:
    """A student and a session cookie value for them."""
    user_id: int = await db.fetchval(
        "INSERT INTO app_user (email, password_hash, email_verified) VALUES ($1, 'x', true) RETURNING id",
        email,
    )
    cookie = await start_session(redis_client, settings, user_id)
    assert cookie.value is not None
    return user_id, cookie.value


async def watch(db: asyncpg.Pool, user_id: int, class_nbr: str) -> int:
    watch_id: int = await db.fetchval(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, '2271', $2) RETURNING id",
        user_id,
        class_nbr,
    )
    return watch_id


async def seats_over_time(
    db: asyncpg.Pool, class_nbr: str, days_ago_and_taken: list[tuple[float, int]]
) -> None:
    """Store snapshots of a 100-seat section as the detector does, one per (days ago, seats taken)."""
    now = time.time()
    for n, (days_ago, taken) in enumerate(days_ago_and_taken):
        await apply_snapshots(
            db, [snapshot(f"{class_nbr}-{n}", now - days_ago * DAY, class_nbr=class_nbr, enrl_tot=taken)]
        )


def seats(samples: list[Sample]) -> list[int]:
    return [s.open_seats for s in samples]


async def test_a_watch_shows_its_sections_seats_over_time_to_its_owner_only(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    owner, cookie = await student(db, redis_client, settings, "owner@asu.edu")
    _, other_cookie = await student(db, redis_client, settings, "other@asu.edu")
    watch_id = await watch(db, owner, "12345")
    await seats_over_time(db, "12345", [(30, 100), (10, 98), (9, 98), (2, 100), (1, 99)])
    path = f"/api/v1/watches/{watch_id}/history"

    assert (await client.get(path)).status_code == 401
    client.cookies.set("pmc_session", cookie)
    fortnight = (await client.get(path)).json()["samples"]
    # Each change once (nothing for 9 days ago), led by the seats when the 14 days began (30 days ago: 0).
    assert [(s["open_seats"], s["enrl_cap"]) for s in fortnight] == [(0, 100), (2, 100), (0, 100), (1, 100)]
    assert list(fortnight[0]) == ["at", "open_seats", "enrl_cap"]
    assert datetime.fromisoformat(fortnight[0]["at"]) < datetime.now(UTC) - timedelta(days=29)
    week = (await client.get(path, params={"days": 7})).json()["samples"]
    assert [s["open_seats"] for s in week] == [2, 0, 1]
    assert datetime.fromisoformat(week[-1]["at"]) > datetime.now(UTC) - timedelta(days=1, minutes=1)
    for days in ("0", "181", "x"):
        assert (await client.get(path, params={"days": days})).status_code == 400, days

    client.cookies.set("pmc_session", other_cookie)
    foreign = await client.get(path)
    missing = await client.get("/api/v1/watches/999999/history")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"detail": "no such watch"}


async def test_a_watch_of_a_section_never_found_has_no_history(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    owner, cookie = await student(db, redis_client, settings, "owner@asu.edu")
    watch_id = await watch(db, owner, "70000")
    client.cookies.set("pmc_session", cookie)
    assert (await client.get(f"/api/v1/watches/{watch_id}/history")).json() == {"samples": []}


async def test_seat_history_of_many_sections_in_one_query(db: asyncpg.Pool) -> None:
    await seats_over_time(db, "11111", [(20, 100), (3, 95)])
    await seats_over_time(db, "22222", [(40, 90)])  # no change since: only the sample before the range
    await seats_over_time(db, "33333", [(1, 50)])
    since = datetime.now(UTC) - timedelta(days=14)
    history = await seat_history(
        db, [("2271", "11111"), ("2271", "22222"), ("2271", "44444"), ("2271", "11111")], since
    )
    assert {key: seats(samples) for key, samples in history.items()} == {
        ("2271", "11111"): [0, 5],
        ("2271", "22222"): [10],
    }
    first, latest = history[("2271", "11111")]
    assert first.at < since < latest.at
    assert (latest.enrl_cap, latest.enrl_tot) == (100, 95)
    assert await seat_history(db, [], since) == {}
