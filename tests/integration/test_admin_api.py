"""The admin's API on real PostgreSQL, Redis and NATS: only admins get in; totals and the most watched
sections; students searched, disabled and enabled; the health facts of `pmc status`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from pmc import status
from services.gateway.admins import is_admin, is_disabled, set_admin
from services.gateway.app import create_app
from services.gateway.sessions import COOKIE, start_session
from shared.settings import Settings
from tests.integration.test_alerts_api import add_section, add_user, add_watch, log_in
from tests.integration.test_gateway import forget_keys

Client = AsyncTestClient[Litestar]
ROUTES = [
    ("GET", "/api/v1/admin/summary"),
    ("GET", "/api/v1/admin/students"),
    ("POST", "/api/v1/admin/students/1/disable"),
    ("POST", "/api/v1/admin/students/1/enable"),
    ("GET", "/api/v1/admin/health"),
]


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


async def add_admin(db: asyncpg.Pool, email: str = "admin@asu.edu") -> int:
    user_id = await add_user(db, email)
    # The only way to an admin: what `pmc admin promote` calls.
    assert await set_admin(db, email, True) == email
    return user_id


async def add_sent(
    db: asyncpg.Pool, watch_id: int, key: str, sent_at: datetime, *, bounced: bool = False
) -> None:
    await db.execute(
        "INSERT INTO notification (watch_id, kind, change_key, claimed_at, sent_at, bounced_at)"
        " VALUES ($1, 'seat_opened', $2, $3, $3, $4)",
        watch_id,
        key,
        sent_at,
        sent_at if bounced else None,
    )


async def test_only_admins_get_in(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    for method, path in ROUTES:
        response = await client.request(method, path, json={})
        assert response.status_code == 401, path
    student = await add_user(db, "sparky@asu.edu")
    await log_in(client, redis_client, settings, student)
    for method, path in ROUTES:
        response = await client.request(method, path, json={})
        assert response.status_code == 403, path
        assert response.json() == {"detail": "only admins may do this"}
    assert not await is_admin(db, student)
    # `pmc admin promote` finds an account by its canonical address; NUL is in none.
    assert await set_admin(db, " SPARKY@asu.edu", True) == "sparky@asu.edu"
    assert await set_admin(db, "sparky@asu.edu", False) == "sparky@asu.edu"
    assert await set_admin(db, "sparky\x00@asu.edu", True) is None
    assert not await is_admin(db, student)
    # An admin disabled (by another admin) is no admin any more.
    admin = await add_admin(db)
    assert await is_admin(db, admin)
    await db.execute("UPDATE app_user SET disabled_at = now() WHERE id = $1", admin)
    assert not await is_admin(db, admin)
    await log_in(client, redis_client, settings, admin)
    assert (await client.get("/api/v1/admin/summary")).status_code == 403


async def test_the_summary_counts_students_watches_sections_and_todays_emails(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    admin = await add_admin(db)
    students = [await add_user(db, f"student{n}@asu.edu") for n in range(12)]
    await db.execute("INSERT INTO app_user (email, password_hash) VALUES ('new@asu.edu', 'x')")
    await add_section(db, "10000")
    # Section 100nn has nn + 1 watchers: 10000 is the most watched, 10011 the 12th.
    watches: list[int] = []
    for n in range(12):
        watches += [await add_watch(db, student, f"100{n:02d}") for student in students[: 12 - n]]
    now = datetime.now(UTC)
    await add_sent(db, watches[0], "today-1", now)
    await add_sent(db, watches[1], "today-2", now, bounced=True)
    await add_sent(db, watches[2], "long-ago", now - timedelta(days=3), bounced=True)
    await log_in(client, redis_client, settings, admin)

    response = await client.get("/api/v1/admin/summary")
    assert response.status_code == 200, response.text
    summary = response.json()
    most_watched = summary.pop("most_watched")
    assert summary == {
        "students": 14,
        "verified_students": 13,
        "watches": 78,
        "sections_watched": 12,
        "emails_today": 2,
        "emails_failed_today": 1,
    }
    assert len(most_watched) == 10
    assert most_watched[0] == {
        "term": "2271",
        "term_label": "Spring 2027",
        "class_nbr": "10000",
        "course": "CSE 310",
        "title": "Data Structures and Algorithms",
        "watchers": 12,
    }
    assert [(row["class_nbr"], row["course"], row["watchers"]) for row in most_watched[1:3]] == [
        ("10001", None, 11),
        ("10002", None, 10),
    ]
    assert most_watched[-1]["watchers"] == 3


async def test_students_are_searched_by_part_of_their_email_a_page_at_a_time(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    admin = await add_admin(db, "admin@example.edu")
    for n in range(5):
        await add_user(db, f"Sparky{n}@ASU.edu")
    odd = await add_user(db, "100%_sure@asu.edu")
    await add_watch(db, odd)
    await db.execute("INSERT INTO app_user (email, password_hash) VALUES ('unverified@asu.edu', 'x')")
    await log_in(client, redis_client, settings, admin)

    everyone = await client.get("/api/v1/admin/students")
    assert everyone.status_code == 200, everyone.text
    assert everyone.json()["total"] == 8
    newest = everyone.json()["students"][0]
    assert newest.pop("created_at")
    assert newest == {
        "id": 8,
        "email": "unverified@asu.edu",
        "verified": False,
        "disabled": False,
        "watches": 0,
        "is_admin": False,
    }
    admin_row = everyone.json()["students"][-1]
    assert (admin_row["email"], admin_row["is_admin"]) == ("admin@example.edu", True)

    sparkies = await client.get("/api/v1/admin/students", params={"q": "sparky", "limit": "2", "offset": "1"})
    assert sparkies.json()["total"] == 5
    assert [row["email"] for row in sparkies.json()["students"]] == ["Sparky3@ASU.edu", "Sparky2@ASU.edu"]
    literal = await client.get("/api/v1/admin/students", params={"q": "%_"})
    assert [(row["email"], row["watches"]) for row in literal.json()["students"]] == [
        ("100%_sure@asu.edu", 1)
    ]
    past_the_end = await client.get("/api/v1/admin/students", params={"q": "sparky", "offset": "50"})
    assert past_the_end.json() == {"students": [], "total": 5}

    for params in ({"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"limit": "x"}, {"q": "x" * 255}):
        assert (await client.get("/api/v1/admin/students", params=params)).status_code == 400, params
    nul = await client.get("/api/v1/admin/students", params={"q": "a\x00b"})
    assert nul.status_code == 422
    assert nul.json() == {"detail": "q must not contain a NUL character"}


async def test_a_disabled_student_is_logged_out_and_an_admin_cannot_disable_themselves(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    admin = await add_admin(db)
    student = await add_user(db, "sparky@asu.edu")
    await add_watch(db, student)
    student_session = await start_session(redis_client, settings, student)
    await log_in(client, redis_client, settings, admin)
    admin_session = client.cookies[COOKIE]

    disabled = await client.post(f"/api/v1/admin/students/{student}/disable", json={})
    assert disabled.status_code == 200, disabled.text
    body = disabled.json()
    assert (body["id"], body["email"], body["disabled"], body["watches"]) == (
        student,
        "sparky@asu.edu",
        True,
        1,
    )
    assert await is_disabled(db, student)
    first = await db.fetchval("SELECT disabled_at FROM app_user WHERE id = $1", student)
    again = await client.post(f"/api/v1/admin/students/{student}/disable", json={})
    assert again.json()["disabled"] is True
    assert await db.fetchval("SELECT disabled_at FROM app_user WHERE id = $1", student) == first
    # The student's session is over.
    client.cookies.set(COOKIE, student_session.value or "")
    assert (await client.get("/api/v1/me/alerts")).status_code == 401
    client.cookies.set(COOKIE, admin_session)

    enabled = await client.post(f"/api/v1/admin/students/{student}/enable", json={})
    assert enabled.status_code == 200
    assert enabled.json() == body | {"disabled": False}
    assert not await is_disabled(db, student)

    myself = await client.post(f"/api/v1/admin/students/{admin}/disable", json={})
    assert myself.status_code == 409
    assert myself.json() == {"detail": "you cannot disable your own account"}
    for path, status_code in [
        ("/api/v1/admin/students/999999/disable", 404),
        ("/api/v1/admin/students/999999/enable", 404),
        (f"/api/v1/admin/students/{2**63}/disable", 400),
        ("/api/v1/admin/students/0/disable", 400),
    ]:
        assert (await client.post(path, json={})).status_code == status_code, path
    assert (await client.post(f"/api/v1/admin/students/{student}/disable")).status_code == 415
    assert not await is_disabled(db, admin)
    assert not await is_disabled(db, 999999)


async def test_health_tells_what_pmc_status_tells(
    db: asyncpg.Pool,
    nc: Nats,
    js: JetStreamContext,
    redis_client: redis.Redis,
    settings: Settings,
    closed_port: int,
) -> None:
    probed = msgspec.structs.replace(settings, health_urls=f"scraper=http://127.0.0.1:{closed_port}/readyz")
    async with AsyncTestClient(app=create_app(probed)) as client:
        await log_in(client, redis_client, probed, await add_admin(db))
        response = await client.get("/api/v1/admin/health")
    await forget_keys(redis_client, settings.namespace)
    assert response.status_code == 200, response.text
    facts = response.json()
    expected = json.loads(status.as_json(await status.collect(probed, nc, db)))
    assert set(facts) == set(expected)
    assert facts["streams"] == expected["streams"]
    assert facts["services"]["scraper"].startswith("unreachable")
    assert facts["healthy"] is False
    assert facts["problems"] == expected["problems"]
