"""The student's account settings on real PostgreSQL and Redis: export everything, delete everything (with
the password, throttled), and the alert choices new watches start with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.testing import AsyncTestClient
from litestar.types import ControllerRouterHandler
from nats.js import JetStreamContext

from services.gateway import account_api, admin_api, notifications, unsubscribe
from services.gateway.account_api import DELETE_ATTEMPTS, default_alerts
from services.gateway.app import create_app
from services.gateway.passwords import hash_password
from services.gateway.sessions import COOKIE, start_session
from services.gateway.terms import arizona_today, upcoming_terms
from shared.alerts import ALERT_KINDS, DEFAULT_ALERTS
from shared.settings import Settings
from tests.integration.test_alerts_api import add_notification, add_section, add_watch, log_in
from tests.integration.test_gateway import forget_keys

Client = AsyncTestClient[Litestar]
PASSWORD = "correct horse battery"


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


async def add_student(db: asyncpg.Pool, email: str, password: str = PASSWORD) -> int:
    """A verified student whose password is `password` (the registration flow is tested elsewhere)."""
    user_id: int = await db.fetchval(
        "INSERT INTO app_user (email, password_hash, email_verified) VALUES ($1, $2, true) RETURNING id",
        email,
        hash_password(password),
    )
    return user_id


async def add_outbox_email(db: asyncpg.Pool, email_id: str, to: str) -> None:
    await db.execute(
        "INSERT INTO outbox_email (id, to_addr, subject, text_body, html_body)"
        " VALUES ($1, $2, 'Seat available', 'text', 'html')",
        email_id,
        to,
    )


async def test_the_settings_need_a_session(client: Client) -> None:
    for method, path in [
        ("GET", "/api/v1/me/export"),
        ("DELETE", "/api/v1/me"),
        ("GET", "/api/v1/me/alerts"),
        ("PATCH", "/api/v1/me/alerts"),
    ]:
        response = await client.request(method, path, json={"password": PASSWORD, "seat_opened": True})
        assert response.status_code == 401, path
        assert response.json() == {"detail": "log in first"}


async def test_the_export_holds_everything_about_the_student_and_no_secret(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    user_id = await add_student(db, "sparky@asu.edu")
    await db.execute("UPDATE app_user SET default_alerts = '{\"closed_again\": true}' WHERE id = $1", user_id)
    await db.execute(
        "INSERT INTO account_token (user_id, purpose, nonce_hash, expires_at)"
        " VALUES ($1, 'reset', '\\x0102', now() + interval '1 hour')",
        user_id,
    )
    known, unknown = await add_watch(db, user_id, "12345"), await add_watch(db, user_id, "67890")
    await db.execute("UPDATE watch SET alerts = alerts || '{\"seat_opened\": false}' WHERE id = $1", unknown)
    await add_section(db, "12345")
    await add_notification(db, known, "s1", minutes=1, provider_id="em-1")
    await add_notification(db, unknown, "s2", minutes=2, sent=False, kind="instructor_changed")
    stranger = await add_student(db, "stranger@asu.edu")
    await add_notification(db, await add_watch(db, stranger, "11111"), "s3", provider_id="em-3")
    await log_in(client, redis_client, settings, user_id)

    response = await client.get("/api/v1/me/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="pickmyclass-export.json"'
    assert response.headers["content-type"].startswith("application/json")
    export = response.json()
    assert set(export) == {"exported_at", "account", "watches", "notifications"}
    account = export["account"]
    assert account.pop("created_at")
    assert account == {
        "email": "sparky@asu.edu",
        "notifications_enabled": True,
        "email_status": "ok",
        "verified": True,
        "default_alerts": DEFAULT_ALERTS | {"closed_again": True},
    }
    assert [(w["id"], w["class_nbr"], w["course"], w["title"]) for w in export["watches"]] == [
        (known, "12345", "CSE 310", "Data Structures and Algorithms"),
        (unknown, "67890", None, None),
    ]
    assert export["watches"][1]["alerts"] == DEFAULT_ALERTS | {"seat_opened": False}
    assert export["watches"][0]["term_label"] == "Spring 2027"
    first, second = export["notifications"]
    assert (first["kind"], first["class_nbr"], first["course"], first["status"]) == (
        "seat_opened",
        "12345",
        "CSE 310",
        "sent",
    )
    assert first["sent_at"] == "2026-11-20T12:01:00Z"
    assert (second["kind"], second["status"], second["sent_at"]) == ("instructor_changed", "sending", None)
    text = response.text
    for secret in ("scrypt", "argon2", "password", "nonce", "token", "em-1", "stranger", "11111"):
        assert secret not in text, secret


async def test_deleting_the_account_needs_the_password_and_then_removes_everything(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    user_id = await add_student(db, "Sparky@asu.edu")
    watch_id = await add_watch(db, user_id)
    await add_notification(db, watch_id, "s1", provider_id="em-1")
    await db.execute(
        "INSERT INTO account_token (user_id, purpose, nonce_hash, expires_at)"
        " VALUES ($1, 'verify', '\\x0102', now() + interval '1 day')",
        user_id,
    )
    await add_outbox_email(db, "mine", "sparky@ASU.edu")
    classmate = await add_student(db, "classmate@asu.edu")
    await add_notification(db, await add_watch(db, classmate), "s1", provider_id="em-2")
    await add_outbox_email(db, "theirs", "classmate@asu.edu")
    other_device = await start_session(redis_client, settings, user_id)
    await log_in(client, redis_client, settings, user_id)
    this_device = client.cookies[COOKIE]
    not_json = await client.request("DELETE", "/api/v1/me", content=b"password=x")
    assert not_json.status_code == 415

    wrong = await client.request("DELETE", "/api/v1/me", json={"password": "not my password"})
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "wrong password: your account was not deleted"}
    assert await db.fetchval("SELECT count(*) FROM app_user") == 2

    deleted = await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD})
    assert deleted.status_code == 204, deleted.text
    assert deleted.headers["set-cookie"].startswith(f'{COOKIE}=""')
    assert "Max-Age=0" in deleted.headers["set-cookie"]
    # Every session of the account ended, the other device's too.
    for session_id in (this_device, other_device.value):
        client.cookies.set(COOKIE, session_id or "")
        assert (await client.get("/api/v1/me/alerts")).status_code == 401
    assert [row["id"] for row in await db.fetch("SELECT id FROM app_user")] == [classmate]
    assert await db.fetchval("SELECT count(*) FROM watch WHERE user_id = $1", user_id) == 0
    assert [row["provider_id"] for row in await db.fetch("SELECT provider_id FROM notification")] == ["em-2"]
    assert await db.fetchval("SELECT count(*) FROM account_token") == 0
    assert [row["id"] for row in await db.fetch("SELECT id FROM outbox_email")] == ["theirs"]
    assert [key async for key in redis_client.scan_iter(f"{settings.namespace}:session:*")] == []


async def test_deletion_attempts_are_throttled_per_account(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    user_id = await add_student(db, "sparky@asu.edu")
    await log_in(client, redis_client, settings, user_id)
    for _ in range(DELETE_ATTEMPTS.amount):
        wrong = await client.request("DELETE", "/api/v1/me", json={"password": "guess guess"})
        assert wrong.status_code == 403
    throttled = await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 15 * 60
    assert "too many attempts" in throttled.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM app_user") == 1, "not even the right password gets through"

    # Another student's attempts are counted apart.
    other = await add_student(db, "classmate@asu.edu")
    await log_in(client, redis_client, settings, other)
    assert (await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD})).status_code == 204


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b"{}", 422, "send your password"),
        (b'{"password": ""}', 422, "send your password"),
        (b'{"password": 42}', 422, "Expected `str`, got `int`"),
        (json.dumps({"password": "x" * 1025}).encode(), 422, "at most 1024 characters"),
        (b"{nope", 400, "not valid JSON"),
        (b'{"junk": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "not valid JSON"),
        (b'{"password": "' + b"x" * 20_000 + b'"}', 413, ""),
    ],
)
async def test_a_deletion_without_a_usable_password_is_a_4xx_and_deletes_nothing(
    client: Client,
    db: asyncpg.Pool,
    redis_client: redis.Redis,
    settings: Settings,
    content: bytes,
    status: int,
    detail: str,
) -> None:
    user_id = await add_student(db, "sparky@asu.edu")
    await log_in(client, redis_client, settings, user_id)
    headers = {"content-type": "application/json"}
    response = await client.request("DELETE", "/api/v1/me", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM app_user") == 1


async def test_a_student_chooses_the_alerts_new_watches_start_with(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings
) -> None:
    user_id = await add_student(db, "sparky@asu.edu")
    await log_in(client, redis_client, settings, user_id)
    assert (await client.get("/api/v1/me/alerts")).json() == DEFAULT_ALERTS
    assert await default_alerts(db, user_id) == DEFAULT_ALERTS

    changed = await client.patch("/api/v1/me/alerts", json={"closed_again": True, "seat_opened": False})
    assert changed.status_code == 200, changed.text
    expected = DEFAULT_ALERTS | {"closed_again": True, "seat_opened": False}
    assert changed.json() == expected
    again = await client.patch("/api/v1/me/alerts", json={"waitlist_opened": True})
    assert again.json() == expected | {"waitlist_opened": True}
    assert (await client.get("/api/v1/me/alerts")).json() == expected | {"waitlist_opened": True}
    assert await default_alerts(db, user_id) == expected | {"waitlist_opened": True}
    # Only what the student chose is stored: a kind never touched follows the global default.
    stored = json.loads(await db.fetchval("SELECT default_alerts FROM app_user WHERE id = $1", user_id))
    assert stored == {"closed_again": True, "seat_opened": False, "waitlist_opened": True}
    assert set(ALERT_KINDS) - set(stored) == {"instructor_changed"}
    # Another student's defaults are their own.
    assert await default_alerts(db, await add_student(db, "classmate@asu.edu")) == DEFAULT_ALERTS

    # New watches, one at a time or pasted, start from those choices; each can still be changed alone.
    term = next(t.code for t in upcoming_terms(arizona_today()) if t.default)
    added = await client.post("/api/v1/watches", json={"term": term, "class_nbr": "12345"})
    assert added.status_code == 201, added.text
    assert added.json()["alerts"] == expected | {"waitlist_opened": True}
    pasted = await client.post("/api/v1/watches/bulk", json={"term": term, "text": "23456 34567"})
    assert pasted.status_code == 200, pasted.text
    assert [watch["alerts"] for watch in pasted.json()["added"]] == [expected | {"waitlist_opened": True}] * 2


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"seat_filled": True}, 422, "unknown field `seat_filled`"),
        ({"seat_opened": 1}, 422, "Expected `bool`, got `int`"),
        ({"seat_opened": None}, 422, "Expected `bool`, got `null`"),
        (["seat_opened"], 422, "Expected `object`, got `array`"),
        ({}, 422, "send at least one alert kind"),
    ],
)
async def test_alert_defaults_are_validated(
    client: Client,
    db: asyncpg.Pool,
    redis_client: redis.Redis,
    settings: Settings,
    body: Any,
    status: int,
    detail: str,
) -> None:
    user_id = await add_student(db, "sparky@asu.edu")
    await log_in(client, redis_client, settings, user_id)
    response = await client.patch("/api/v1/me/alerts", json=body)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert await db.fetchval("SELECT default_alerts FROM app_user") is None


def test_every_settings_and_admin_endpoint_documents_its_answers() -> None:
    handlers: list[ControllerRouterHandler] = [
        account_api.export_account,
        account_api.delete_account,
        account_api.get_default_alerts,
        account_api.update_default_alerts,
        admin_api.router,
        notifications.list_notifications,
        unsubscribe.unsubscribe_page,
        unsubscribe.unsubscribe,
        unsubscribe.resubscribe,
        unsubscribe.stop_watching_page,
        unsubscribe.stop_watching,
    ]
    provided = ("settings", "topology", "pool", "redis", "nc", "js", "user_id")
    app = Litestar(
        route_handlers=handlers,
        dependencies={name: Provide(lambda: None, sync_to_thread=False) for name in provided},
        openapi_config=OpenAPIConfig(title="PickMyClass", version="test"),
    )
    paths = msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))["paths"]
    answers = {
        (method.upper(), path): set(operation["responses"])
        for path, item in paths.items()
        for method, operation in item.items()
    }
    assert answers[("DELETE", "/api/v1/me")] >= {"204", "401", "403", "422", "429"}
    assert answers[("PATCH", "/api/v1/me/alerts")] >= {"200", "401", "422"}
    assert answers[("GET", "/api/v1/admin/summary")] >= {"200", "401", "403"}
    assert answers[("POST", "/api/v1/admin/students/{student_id}/disable")] >= {"200", "403", "404", "409"}
    assert answers[("GET", "/api/v1/admin/health")] >= {"200", "403", "503"}
    assert answers[("GET", "/api/v1/notifications")] >= {"200", "401", "422"}
    for (method, path), codes in answers.items():
        assert any(code.startswith("2") for code in codes), (method, path)
        if path.startswith("/api/"):
            assert "401" in codes, (method, path)
