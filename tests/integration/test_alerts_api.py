"""The student's side of alerts on real servers: per-watch alert choices, the list of alerts sent, and what
the email provider reports back (webhook → JetStream → notifier → PostgreSQL → API)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from devtools.resend_webhooks import PATH, deliver, email_event, new_secret
from services.gateway.app import create_app
from services.gateway.sessions import start_session
from services.notifier.backends import OutboxBackend
from services.notifier.handlers import Notifier
from services.notifier.provider_events import UNKNOWN_EMAIL_DELIVERIES, ProviderEvents
from shared.alerts import DEFAULT_ALERTS
from shared.events import WatchesChanged, decode, encode
from shared.settings import Settings
from shared.streams import Consumer, Topology
from shared.tokens import STOP_WATCHING, UNSUBSCRIBE, sign, stop_watching_url
from tests.factories import OPEN_TERM, change
from tests.integration.test_gateway import forget_keys
from tests.jetstream import fetch, lose_ack, quick_redelivery

Client = AsyncTestClient[Litestar]
SECRET = new_secret()
SENT_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def configured(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, resend_webhook_secret=SECRET)


@pytest.fixture
async def client(
    configured: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(configured)) as test_client:
        yield test_client
    await forget_keys(redis_client, configured.namespace)


async def add_user(db: asyncpg.Pool, email: str) -> int:
    # Verified, as a student who gets alerts is (the registration flow is tested elsewhere).
    user_id: int = await db.fetchval(
        "INSERT INTO app_user (email, password_hash, email_verified) VALUES ($1, 'x', true) RETURNING id",
        email,
    )
    return user_id


async def add_watch(db: asyncpg.Pool, user_id: int, class_nbr: str = "12345") -> int:
    watch_id: int = await db.fetchval(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, '2271', $2) RETURNING id",
        user_id,
        class_nbr,
    )
    return watch_id


async def add_section(db: asyncpg.Pool, class_nbr: str = "12345") -> None:
    await db.execute(
        "INSERT INTO section (term, class_nbr, subject, catalog_nbr, title, enrl_cap, enrl_tot, open_seats,"
        " snapshot_id, scraped_at) VALUES ('2271', $1, 'CSE', '310', 'Data Structures and Algorithms', 100,"
        " 100, 0, 'snap-1', now())",
        class_nbr,
    )


async def add_notification(
    db: asyncpg.Pool,
    watch_id: int,
    change_key: str,
    *,
    minutes: int = 0,
    provider_id: str | None = None,
    sent: bool = True,
    kind: str = "seat_opened",
) -> None:
    """A notification as the notifier leaves it: claimed, and sent with the provider's id (or not yet)."""
    claimed = SENT_AT.replace(minute=minutes)
    await db.execute(
        "INSERT INTO notification (watch_id, kind, change_key, claimed_at, sent_at, provider_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        watch_id,
        kind,
        change_key,
        claimed,
        claimed if sent else None,
        provider_id,
    )


async def log_in(client: Client, redis_client: redis.Redis, settings: Settings, user_id: int) -> None:
    cookie = await start_session(redis_client, settings, user_id)
    assert cookie.value is not None
    client.cookies.set(cookie.key, cookie.value)


async def apply_stored(
    js: JetStreamContext, db: asyncpg.Pool, topology: Topology, consumer: Consumer
) -> None:
    """What the notifier's provider worker does with the next stored event."""
    handler = ProviderEvents(db, js, topology, consumer)
    await handler.handle(await fetch(js, consumer))


async def statuses(client: Client) -> list[str]:
    response = await client.get("/api/v1/notifications")
    assert response.status_code == 200, response.text
    return [item["status"] for item in response.json()]


async def test_alerts_and_watch_choices_need_a_session(client: Client) -> None:
    for method, path in [("GET", "/api/v1/notifications"), ("PATCH", "/api/v1/watches/1")]:
        response = await client.request(method, path, json={"alerts": {}})
        assert response.status_code == 401, path
        assert response.json() == {"detail": "log in first"}


async def test_a_student_sees_their_alerts_newest_first_with_the_section_and_what_became_of_each(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, configured: Settings
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    known, unknown = await add_watch(db, user_id, "12345"), await add_watch(db, user_id, "67890")
    await add_section(db, "12345")
    await add_notification(db, known, "s1", minutes=1, provider_id="em-1")
    await add_notification(db, known, "s2", minutes=2, provider_id="em-2")
    await add_notification(db, unknown, "s3", minutes=3, provider_id="em-3", kind="instructor_changed")
    await add_notification(db, known, "s4", minutes=4, sent=False)
    await db.execute("UPDATE notification SET delivered_at = now() WHERE provider_id IN ('em-2', 'em-3')")
    await db.execute("UPDATE notification SET bounced_at = now() WHERE provider_id = 'em-3'")
    someone_else = await add_watch(db, await add_user(db, "other@asu.edu"))
    await add_notification(db, someone_else, "s5", minutes=5, provider_id="em-5")
    await log_in(client, redis_client, configured, user_id)

    response = await client.get("/api/v1/notifications")
    assert response.status_code == 200
    newest, bounced, delivered, sent = response.json()
    assert [item["status"] for item in (newest, bounced, delivered, sent)] == [
        "sending",
        "bounced",
        "delivered",
        "sent",
    ]
    assert sent == {
        "watch_id": known,
        "kind": "seat_opened",
        "term": "2271",
        "term_label": "Spring 2027",
        "class_nbr": "12345",
        "course": "CSE 310",
        "title": "Data Structures and Algorithms",
        "sent_at": "2026-11-20T12:01:00Z",
        "status": "sent",
    }
    assert newest["sent_at"] is None
    assert (bounced["kind"], bounced["course"], bounced["title"]) == ("instructor_changed", None, None)

    latest = await client.get("/api/v1/notifications", params={"limit": "2"})
    assert [item["status"] for item in latest.json()] == ["sending", "bounced"]
    for limit in ("0", "101", "x"):
        refused = await client.get("/api/v1/notifications", params={"limit": limit})
        assert refused.status_code == 422
        assert refused.json() == {"detail": "limit must be a whole number from 1 to 100"}


async def test_a_delivery_report_shows_the_alert_as_delivered(
    client: Client,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
    configured: Settings,
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    await add_notification(db, await add_watch(db, user_id), "s1", provider_id="em-1")
    await log_in(client, redis_client, configured, user_id)
    assert await statuses(client) == ["sent"]

    reported = email_event("email.delivered", "em-1", ["sparky@asu.edu"], created_at=1_800_000_000.0)
    assert (await deliver(PATH, reported, SECRET, client=client)).status_code == 200
    await apply_stored(js, db, topology, topology.notifier_provider)

    assert await statuses(client) == ["delivered"]
    delivered_at = await db.fetchval("SELECT delivered_at FROM notification")
    assert delivered_at == datetime.fromtimestamp(1_800_000_000, UTC), "the provider's time of delivery"
    me = await client.get("/api/v1/auth/me")
    assert me.json()["email_status"] == "ok"


async def test_a_hard_bounce_stops_all_email_to_the_address(
    client: Client,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
    configured: Settings,
) -> None:
    user_id = await add_user(db, "Sparky@ASU.edu")
    await add_notification(db, await add_watch(db, user_id), "s1", provider_id="em-1")
    await add_watch(db, await add_user(db, "classmate@asu.edu"))
    await log_in(client, redis_client, configured, user_id)

    # The address as the provider writes it, in another case than the account's.
    bounce = email_event("email.bounced", "em-1", ["sparky@asu.edu"], bounce_type="Permanent")
    assert (await deliver(PATH, bounce, SECRET, client=client)).status_code == 200
    await apply_stored(js, db, topology, topology.notifier_provider)

    assert (await client.get("/api/v1/auth/me")).json()["email_status"] == "bounced"
    assert await statuses(client) == ["bounced"]
    # The next opening: the classmate is told, the bounced address is not.
    await js.publish(topology.change_subject("seat_opened"), encode(change("seat_opened", "s2")))
    notifier = Notifier(db, OutboxBackend(db), js, topology, topology.notifier, configured)
    await notifier.handle(await fetch(js, topology.notifier))
    assert [row["to_addr"] for row in await db.fetch("SELECT to_addr FROM outbox_email")] == [
        "classmate@asu.edu"
    ]


async def test_a_complaint_stops_the_address_and_a_soft_bounce_does_not(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    complainer, soft = await add_user(db, "spam@asu.edu"), await add_user(db, "full@asu.edu")
    await add_notification(db, await add_watch(db, complainer), "s1", provider_id="em-1")
    await add_notification(db, await add_watch(db, soft), "s1", provider_id="em-2")
    for event in (
        email_event("email.complained", "em-1", ["spam@asu.edu"]),
        email_event("email.bounced", "em-2", ["full@asu.edu"], bounce_type="Transient"),
    ):
        assert (await deliver(PATH, event, SECRET, client=client)).status_code == 200
    handler = ProviderEvents(db, js, topology, topology.notifier_provider)
    await handler.handle(await fetch(js, topology.notifier_provider, count=2))
    users = await db.fetch("SELECT email, email_status FROM app_user ORDER BY email")
    assert [(row["email"], row["email_status"]) for row in users] == [
        ("full@asu.edu", "ok"),
        ("spam@asu.edu", "complained"),
    ]
    marks = await db.fetch(
        "SELECT provider_id, bounced_at IS NOT NULL AS bounced FROM notification ORDER BY 1"
    )
    assert [(row["provider_id"], row["bounced"]) for row in marks] == [("em-1", True), ("em-2", False)]
    info = await js.consumer_info(topology.notifier_provider.stream, topology.notifier_provider.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "the soft bounce is settled, not retried"


async def test_a_redelivered_provider_event_has_one_effect(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier_provider)
    user_id = await add_user(db, "sparky@asu.edu")
    await add_notification(db, await add_watch(db, user_id), "s1", provider_id="em-1")
    bounce = email_event("email.bounced", "em-1", ["sparky@asu.edu"], bounce_type="Permanent")
    assert (await deliver(PATH, bounce, SECRET, client=client)).status_code == 200
    handler = ProviderEvents(db, js, topology, consumer)

    [first] = await fetch(js, consumer)
    await handler.handle([lose_ack(first)])
    effect = await db.fetchrow(
        "SELECT u.email_status, n.bounced_at, n.delivered_at FROM app_user u, notification n WHERE u.id = $1",
        user_id,
    )
    assert effect is not None
    assert effect["email_status"] == "bounced"

    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2, "the lost ack came back"
    await handler.handle([again])
    # Then a later report about the same email: the first word stays.
    complaint = email_event("email.complained", "em-1", ["sparky@asu.edu"], created_at=2_000_000_000.0)
    assert (await deliver(PATH, complaint, SECRET, client=client)).status_code == 200
    await handler.handle(await fetch(js, consumer))
    after = await db.fetchrow(
        "SELECT u.email_status, n.bounced_at, n.delivered_at FROM app_user u, notification n WHERE u.id = $1",
        user_id,
    )
    assert after == effect
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_report_that_overtakes_the_record_of_its_send_is_applied_once_the_send_is_recorded(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier_provider)
    watch_id = await add_watch(db, await add_user(db, "sparky@asu.edu"))
    await add_notification(db, watch_id, "s1", sent=False)
    reported = email_event("email.delivered", "em-1", ["sparky@asu.edu"])
    assert (await deliver(PATH, reported, SECRET, client=client)).status_code == 200
    handler = ProviderEvents(db, js, topology, consumer)
    await handler.handle(await fetch(js, consumer))
    # The notifier records the send only now (the provider's answer was slower than its webhook).
    await db.execute("UPDATE notification SET sent_at = now(), provider_id = 'em-1'")
    [retry] = await fetch(js, consumer)
    assert retry.metadata.num_delivered == 2
    await handler.handle([retry])
    assert await db.fetchval("SELECT delivered_at IS NOT NULL FROM notification") is True


async def test_a_report_about_an_email_that_is_no_alert_is_let_go_after_a_few_tries(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    """An account email (verification, reset) bounces: the address stops at once; the report is retried
    a few times for a notification that never appears, then settled, never dead-lettered."""
    consumer = await quick_redelivery(js, topology, topology.notifier_provider)
    await add_user(db, "sparky@asu.edu")
    bounce = email_event("email.bounced", "em-account", ["sparky@asu.edu"], bounce_type="Permanent")
    assert (await deliver(PATH, bounce, SECRET, client=client)).status_code == 200
    handler = ProviderEvents(db, js, topology, consumer)
    for delivery in range(1, UNKNOWN_EMAIL_DELIVERIES + 1):
        [msg] = await fetch(js, consumer)
        assert msg.metadata.num_delivered == delivery
        await handler.handle([msg])
        assert await db.fetchval("SELECT email_status FROM app_user") == "bounced"
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0


async def test_a_student_chooses_the_alerts_of_a_watch(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, configured: Settings
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    await log_in(client, redis_client, configured, user_id)
    created = await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "12345"})
    assert created.status_code == 201
    watch = created.json()
    assert watch["alerts"] == DEFAULT_ALERTS

    changed = await client.patch(
        f"/api/v1/watches/{watch['id']}", json={"alerts": {"closed_again": True, "seat_opened": False}}
    )
    assert changed.status_code == 200, changed.text
    expected = DEFAULT_ALERTS | {"closed_again": True, "seat_opened": False}
    assert changed.json() == watch | {"alerts": expected}
    # Kinds left out keep their choice.
    again = await client.patch(f"/api/v1/watches/{watch['id']}", json={"alerts": {"waitlist_opened": True}})
    assert again.json()["alerts"] == expected | {"waitlist_opened": True}
    assert (await client.get("/api/v1/watches")).json()[0]["alerts"] == expected | {"waitlist_opened": True}
    stored = await db.fetchval("SELECT alerts FROM watch WHERE id = $1", watch["id"])
    assert json.loads(stored) == expected | {"waitlist_opened": True}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"alerts": {"seat_filled": True}}, "unknown alert kind 'seat_filled'"),
        ({"alerts": {"seat_opened": 1}}, "Expected `bool`, got `int`"),
        ({"alerts": {"seat_opened": "true"}}, "Expected `bool`, got `str`"),
        ({"alerts": {"seat_opened": None}}, "Expected `bool`, got `null`"),
        ({"alerts": ["seat_opened"]}, "Expected `object | null`, got `array`"),
        ({}, "send alerts"),
    ],
)
async def test_alert_choices_are_validated(
    client: Client,
    db: asyncpg.Pool,
    redis_client: redis.Redis,
    configured: Settings,
    body: dict[str, Any],
    detail: str,
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    watch_id = await add_watch(db, user_id)
    await log_in(client, redis_client, configured, user_id)
    response = await client.patch(f"/api/v1/watches/{watch_id}", json=body)
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert json.loads(await db.fetchval("SELECT alerts FROM watch")) == DEFAULT_ALERTS


async def test_someone_elses_watch_cannot_be_changed_and_hostile_bodies_are_4xx(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, configured: Settings
) -> None:
    foreign = await add_watch(db, await add_user(db, "owner@asu.edu"))
    user_id = await add_user(db, "sparky@asu.edu")
    await log_in(client, redis_client, configured, user_id)
    body = {"alerts": {"closed_again": True}}
    missing = await client.patch("/api/v1/watches/999999", json=body)
    other = await client.patch(f"/api/v1/watches/{foreign}", json=body)
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json() == {"detail": "no such watch"}
    assert json.loads(await db.fetchval("SELECT alerts FROM watch")) == DEFAULT_ALERTS

    mine = await add_watch(db, user_id)
    headers = {"content-type": "application/json"}
    # Deep in a field the decoder skips: deeper than its recursion limit, not a type error it stops at.
    deep = b'{"junk": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for content, status in [
        (deep, 400),
        (b"{nope", 400),
        (b'{"alerts": {"' + b"x" * 20_000 + b'": true}}', 413),
    ]:
        response = await client.patch(f"/api/v1/watches/{mine}", content=content, headers=headers)
        assert response.status_code == status


async def test_the_list_of_alerts_comes_a_page_at_a_time_without_gaps_or_repeats(
    client: Client, db: asyncpg.Pool, redis_client: redis.Redis, configured: Settings
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    first, second = await add_watch(db, user_id, "12345"), await add_watch(db, user_id, "67890")
    await add_section(db, "12345")
    # Alerts sent in one batch share their time: the page boundary falls among them.
    for watch_id in (first, second):
        for key in ("s1", "s2"):
            await add_notification(db, watch_id, key, minutes=5)
    await add_notification(db, first, "s0", minutes=1)
    await add_notification(db, second, "s9", minutes=9, kind="instructor_changed")
    await log_in(client, redis_client, configured, user_id)
    everything = (await client.get("/api/v1/notifications")).json()
    assert len(everything) == 6

    pages, url = [], "/api/v1/notifications?limit=4"
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        link = response.headers.get("link")
        url = link.split(">", 1)[0].removeprefix("<") if link else ""
        assert not link or link.endswith('; rel="next"')
    assert [len(page) for page in pages] == [4, 2]
    assert [item for page in pages for item in page] == everything
    assert everything[0]["kind"] == "instructor_changed"
    assert everything[-1]["sent_at"] == "2026-11-20T12:01:00Z"
    exact = await client.get("/api/v1/notifications", params={"limit": "6"})
    assert "link" not in exact.headers, "no next page after the last"

    for before in ("garbage", "x" * 600, "WzEsMiwzXQ", "Ww", "٣"):
        refused = await client.get("/api/v1/notifications", params={"before": before})
        assert refused.status_code == 422, before
        assert "before must be the cursor" in refused.json()["detail"]


async def test_an_unsubscribe_can_be_undone_from_its_page(
    client: Client, db: asyncpg.Pool, configured: Settings
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    token = sign(configured.secret_key, UNSUBSCRIBE, str(user_id), 3600)
    page = await client.get("/unsubscribe", params={"token": token})
    assert '<a href="/">' in page.text
    done = await client.post(
        "/unsubscribe",
        params={"token": token},
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert await db.fetchval("SELECT notifications_enabled FROM app_user") is False
    assert '<a href="/">' in done.text
    assert "<script" not in done.text
    [action] = re.findall(r'<form method="post" action="([^"]+)">', done.text)
    assert "Turn emails back on" in done.text
    undo = html.unescape(action)
    assert undo.startswith("/resubscribe?token=")
    # The undo token is for undoing only: it unsubscribes no one, and an unsubscribe token undoes nothing.
    undo_token = undo.split("token=", 1)[1]
    assert (await client.post("/unsubscribe", params={"token": unquote(undo_token)})).status_code == 400
    assert (await client.post("/resubscribe", params={"token": token})).status_code == 400
    assert await db.fetchval("SELECT notifications_enabled FROM app_user") is False

    back_on = await client.post(undo)
    assert back_on.status_code == 200
    assert "back on" in back_on.text
    assert await db.fetchval("SELECT notifications_enabled FROM app_user") is True
    assert (await client.post("/resubscribe", params={"token": "garbage"})).status_code == 400


async def test_stop_watching_a_section_from_the_email_link(
    client: Client, db: asyncpg.Pool, configured: Settings, nc: Nats, topology: Topology
) -> None:
    user_id = await add_user(db, "sparky@asu.edu")
    watch_id, other = await add_watch(db, user_id, "12345"), await add_watch(db, user_id, "67890")
    await add_section(db, "12345")
    url = stop_watching_url(configured.secret_key, configured.site_url, watch_id)
    assert url.startswith("http://pickmyclass.test/stop-watching?token=")
    path = url.removeprefix(configured.site_url)
    page = await client.get(path)
    assert page.status_code == 200
    assert "CSE 310 Data Structures and Algorithms (class 12345, Spring 2027)" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert await db.fetchval("SELECT count(*) FROM watch") == 2, "a prefetched link deletes nothing"

    live = await nc.subscribe(topology.live_user_subject(user_id))
    await nc.flush()
    done = await client.post(path)
    assert done.status_code == 200
    assert "You no longer watch CSE 310" in done.text
    assert [row["id"] for row in await db.fetch("SELECT id FROM watch")] == [other]
    assert decode((await live.next_msg(timeout=5)).data, WatchesChanged).user_id == user_id, "pages reload"
    await live.unsubscribe()

    for method in ("GET", "POST"):
        again = await client.request(method, path)
        assert again.status_code == 200
        assert "You no longer watch this section" in again.text
    unsubscribe_token = sign(configured.secret_key, UNSUBSCRIBE, str(other), 3600)
    expired = sign(configured.secret_key, STOP_WATCHING, str(other), 60, now=0)
    for token in ("garbage", unsubscribe_token, expired, ""):
        for method in ("GET", "POST"):
            refused = await client.request(method, "/stop-watching", params={"token": token})
            assert refused.status_code == 400
            assert "invalid or has expired" in refused.text
    assert await db.fetchval("SELECT count(*) FROM watch") == 1
