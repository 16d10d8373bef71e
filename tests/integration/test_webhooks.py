"""`POST /api/v1/webhooks/resend` against real NATS, PostgreSQL and Redis: only a fresh, correctly signed
webhook is stored (once) for the notifier; everything else is a 4xx with no effect, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from devtools.resend_webhooks import PATH, deliver, email_event, new_secret, sign, signed_headers
from services.gateway.app import create_app
from shared.events import ProviderEvent
from shared.settings import Settings
from shared.streams import Topology, declare
from tests.integration.test_gateway import forget_keys
from tests.jetstream import stream_events

Client = AsyncTestClient[Litestar]
SECRET = new_secret()


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    configured = msgspec.structs.replace(settings, resend_webhook_secret=SECRET)
    async with AsyncTestClient(app=create_app(configured)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


async def stored(js: JetStreamContext, topology: Topology) -> list[tuple[str, ProviderEvent]]:
    return await stream_events(js, topology.provider_stream, ProviderEvent)


def bounced(email_id: str = "em-1", to: str = "sparky@asu.edu") -> dict[str, Any]:
    return email_event("email.bounced", email_id, [to], bounce_type="Permanent", created_at=1_800_000_000.5)


async def test_a_signed_event_is_stored_once_under_its_svix_id(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    response = await deliver(PATH, bounced(), SECRET, client=client, msg_id="msg_first")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored"}
    [(subject, event)] = await stored(js, topology)
    assert subject == topology.provider_subject("email.bounced")
    assert event == ProviderEvent(
        svix_id="msg_first",
        type="email.bounced",
        email_id="em-1",
        to=("sparky@asu.edu",),
        bounce_type="Permanent",
        created_at=1_800_000_000.5,
    )
    raw = await js.get_last_msg(topology.provider_stream, subject)
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"] == "msg_first"


async def test_a_replayed_webhook_is_a_409_and_stored_once(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    body = json.dumps(email_event("email.delivered", "em-1", ["sparky@asu.edu"])).encode()
    headers = signed_headers(SECRET, body, msg_id="msg_replayed")
    first = await client.post(PATH, content=body, headers=headers)
    assert first.status_code == 200
    # The captured request as it was (a replay), then Resend's own retry: same id, new timestamp.
    replay = await client.post(PATH, content=body, headers=headers)
    retry = await deliver(PATH, body, SECRET, client=client, msg_id="msg_replayed")
    for answer in (replay, retry):
        assert answer.status_code == 409
        assert answer.json() == {"detail": "webhook msg_replayed was already received"}
    assert len(await stored(js, topology)) == 1


def tampered(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"em-1", b"em-2"), headers


def other_secret(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, signed_headers(new_secret(), body, msg_id=headers["svix-id"])


def stale(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, signed_headers(SECRET, body, timestamp=int(headers["svix-timestamp"]) - 301)


def future(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    # Well past the tolerance: the header's whole seconds and a slow run eat into a one-second margin.
    return body, signed_headers(SECRET, body, timestamp=int(headers["svix-timestamp"]) + 360)


def unsigned(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, headers | {"svix-signature": "v1,"}


def no_id(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {k: v for k, v in headers.items() if k != "svix-id"}


def no_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {k: v for k, v in headers.items() if k != "svix-signature"}


def bad_timestamp(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, headers | {"svix-timestamp": "yesterday"}


def id_with_spaces(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, headers | {"svix-id": "msg with spaces"}


@pytest.mark.parametrize(
    ("forge", "status", "detail"),
    [
        (tampered, 401, "invalid webhook signature"),
        (other_secret, 401, "invalid webhook signature"),
        (unsigned, 401, "invalid webhook signature"),
        (stale, 401, "webhook timestamp is outside the 5-minute tolerance"),
        (future, 401, "webhook timestamp is outside the 5-minute tolerance"),
        (no_id, 400, "missing webhook headers: svix-id"),
        (no_signature, 400, "missing webhook headers: svix-signature"),
        (bad_timestamp, 400, "svix-timestamp must be seconds since the epoch"),
        (id_with_spaces, 400, "svix-id is malformed"),
    ],
)
async def test_forged_stale_or_incomplete_webhooks_are_refused_and_change_nothing(
    client: Client,
    js: JetStreamContext,
    topology: Topology,
    db: asyncpg.Pool,
    forge: Any,
    status: int,
    detail: str,
) -> None:
    user_id = await db.fetchval(
        "INSERT INTO app_user (email, password_hash) VALUES ('sparky@asu.edu', 'x') RETURNING id"
    )
    body = json.dumps(bounced()).encode()
    forged_body, headers = forge(body, signed_headers(SECRET, body))
    response = await client.post(PATH, content=forged_body, headers=headers)
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    assert await stored(js, topology) == [], "nothing reaches the notifier"
    assert await db.fetchval("SELECT email_status FROM app_user WHERE id = $1", user_id) == "ok"


async def test_event_types_nobody_acts_on_are_acknowledged_and_dropped(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    for event_type in ("email.opened", "email.sent", "contact.created"):
        payload = {"type": event_type, "created_at": "2026-11-20T12:00:00Z", "data": {"id": 5, "bounce": 1}}
        response = await deliver(PATH, payload, SECRET, client=client)
        assert response.status_code == 200
        assert response.json() == {"status": "ignored"}
    assert await stored(js, topology) == []


@pytest.mark.parametrize("secret", ["", "whsec_not base64!"])
async def test_without_a_usable_secret_the_endpoint_says_so(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, secret: str
) -> None:
    unconfigured = msgspec.structs.replace(settings, resend_webhook_secret=secret)
    async with AsyncTestClient(app=create_app(unconfigured)) as client:
        response = await deliver(PATH, bounced(), SECRET, client=client)
    assert response.status_code == 503
    assert "RESEND_WEBHOOK_SECRET" in response.json()["detail"]


async def post_streamed(
    client: Client, path: str, body: bytes, headers: dict[str, str], *, chunk: int
) -> int:
    """POST `body` in chunks with `Transfer-Encoding: chunked` to the app in `client`; returns the status."""
    parts = [body[start : start + chunk] for start in range(0, len(body), chunk)]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]
        + [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        if parts:
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await client.app(scope, receive, send)
    return status[0]


def deep_json() -> bytes:
    return b'{"type": "email.bounced", "data": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # JSON strings with NUL characters: PostgreSQL text would refuse them.
        (json.dumps(bounced(email_id="em\u00001")).encode(), 400),
        (json.dumps(bounced(to="spar\u0000ky@asu.edu")).encode(), 400),
        (json.dumps(email_event("email.delivered", "em-1", ["x@asu.edu\r\nBcc: y@asu.edu"])).encode(), 400),
        (b'{"type": "email.delivered", "data": {"email_id": "em-1"}}\x00', 400),
        (deep_json(), 400),
        ('{"type": "email.delivered", "x": "\u00e9"}'.encode("latin-1"), 400),
        (b"not json", 400),
        (b"[1, 2, 3]", 400),
        (b'{"type": 5}', 400),
        (b'{"type": "email.delivered", "data": {"email_id": 7}}', 400),
        (b'{"type": "email.delivered", "data": {"email_id": ""}}', 400),
        (b'{"type": "email.bounced", "data": {"email_id": "em-1", "to": [1]}}', 400),
        (b'{"type": "email.bounced", "data": {"email_id": "em-1", "bounce": {"type": "\\u0000"}}}', 400),
        (b"", 400),
    ],
)
async def test_hostile_bodies_are_4xx_even_when_signed(
    client: Client, js: JetStreamContext, topology: Topology, body: bytes, status: int
) -> None:
    response = await client.post(PATH, content=body, headers=signed_headers(SECRET, body))
    assert response.status_code == status, response.text
    assert await stored(js, topology) == []


async def test_bodies_over_64_kib_are_refused_before_anything_is_verified(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    padding = "x" * (64 * 1024)
    body = json.dumps(email_event("email.delivered", "em-1", ["sparky@asu.edu"], subject=padding)).encode()
    declared = await client.post(PATH, content=body, headers=signed_headers(SECRET, body))
    assert declared.status_code == 413

    # No Content-Length: the limit must hold while the body streams in (straight to the ASGI app, as the
    # test client cannot stream a body).
    streamed = await post_streamed(client, PATH, body, signed_headers(SECRET, body), chunk=8192)
    assert streamed == 413
    assert await stored(js, topology) == []


async def test_a_webhook_needs_no_session_but_must_be_json(client: Client) -> None:
    body = json.dumps(bounced()).encode()
    headers = signed_headers(SECRET, body) | {"content-type": "text/plain"}
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 415
    client.cookies.clear()
    response = await deliver(PATH, bounced(), SECRET, client=client)
    assert response.status_code == 200


async def test_nats_unavailable_is_a_503_and_resends_retry_is_stored_once(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    # Nothing stores the provider subject: a publish finds no stream, as in a JetStream outage.
    await js.delete_stream(topology.provider_stream)
    refused = await deliver(PATH, bounced(), SECRET, client=client, msg_id="msg_outage")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert refused.json() == {"detail": "the event could not be stored; retry later"}
    await declare(js, topology, consumers=())
    retried = await deliver(PATH, bounced(), SECRET, client=client, msg_id="msg_outage")
    assert retried.status_code == 200
    assert [event.svix_id for _, event in await stored(js, topology)] == ["msg_outage"]


async def test_the_signature_is_the_sdks(client: Client) -> None:
    """A body signed by `devtools.resend_webhooks.sign` passes; the same body signed over other bytes does
    not (the signed content is exactly `id.timestamp.body`)."""
    body = json.dumps(bounced()).encode()
    headers = signed_headers(SECRET, body, msg_id="msg_sdk")
    wrong = sign(SECRET, "msg_sdk", int(headers["svix-timestamp"]), body + b" ")
    assert (
        await client.post(PATH, content=body, headers=headers | {"svix-signature": wrong})
    ).status_code == 401
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 200
