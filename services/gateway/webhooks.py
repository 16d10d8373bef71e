"""`POST /api/v1/webhooks/resend`: what Resend reports about our emails (delivered, bounced, complained).

A webhook is Svix-signed (headers `svix-id`, `svix-timestamp`, `svix-signature`; secret
`RESEND_WEBHOOK_SECRET`). It is verified with the Resend SDK (`resend.Webhooks.verify`), then stored in
JetStream before it is answered, and applied by the notifier (`services/notifier/provider_events.py`), the
owner of the notification table. So the answer is 200 only once the event is safe; a NATS outage is a 503
and Resend retries later, losing nothing.

Replays: the signature covers the timestamp, which must be within 5 minutes, and the svix id is the
`Nats-Msg-Id`, deduplicated by the provider stream for 10 minutes; so a captured request can be replayed
neither later (stale) nor sooner (duplicate, 409).

No session and no CSRF token: the signature is the authentication. The JSON-only rule for `/api/` POSTs
(`csrf.py`) still applies, and Resend (Svix) sends `Content-Type: application/json`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import resend
import structlog
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.openapi.spec import OpenAPIType, Schema
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from services.gateway.bodies import NOT_JSON_TYPE, answers, json_body
from shared.events import ProviderEvent, encode
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

# Resend's email events are a few kilobytes; anything near this is not one of them.
MAX_BODY = 64 * 1024
# Svix's (and the SDK's) tolerance for the signed timestamp, either way.
TOLERANCE_SECONDS = 300
PUBLISH_TIMEOUT = 2.0
# Resend retries a failed delivery on its own schedule (seconds, then minutes); this only says "soon".
RETRY_AFTER_SECONDS = 30

# The events the notifier acts on; others (sent, opened, clicked, delivery_delayed, ...) are acknowledged
# and dropped, so a webhook subscribed to more than these does not fill the stream.
HANDLED_TYPES = frozenset({"email.delivered", "email.bounced", "email.complained"})

# Printable ASCII without spaces: svix ids look like `msg_2Lh9KRb6pzN4Yy5GHkZ5B4ChT9Q`, and the id becomes a
# NATS header value, which must not hold control characters.
_TOKEN = re.compile(r"[!-~]{1,200}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_SIGNATURE_HEADER = 4096
MAX_RECIPIENTS = 50
MAX_ADDRESS = 320


class Bounce(msgspec.Struct, kw_only=True):
    # Resend passes on the receiving server's classification: `Permanent` (hard), `Transient`, ...
    type: str = ""


class EmailData(msgspec.Struct, kw_only=True):
    email_id: str = ""
    # An array of addresses on the wire; a lone string is accepted too.
    to: list[str] | str = msgspec.field(default_factory=list)
    bounce: Bounce | None = None


class Envelope(msgspec.Struct, kw_only=True):
    """Just the type: events nobody acts on are not decoded further (their `data` differs)."""

    type: str


class ResendWebhook(msgspec.Struct, kw_only=True):
    """The wire shape: `{"type": "email.bounced", "created_at": "<ISO 8601>", "data": {...}}`."""

    type: str
    created_at: str = ""
    data: EmailData = msgspec.field(default_factory=EmailData)


class WebhookAnswer(msgspec.Struct, frozen=True, kw_only=True):
    # "stored": kept for the notifier; "ignored": a type nobody acts on.
    status: str


class ServiceUnavailable(HTTPException):
    status_code = 503


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot verify anything, or None."""
    if not secret:
        return "webhooks are not configured: set RESEND_WEBHOOK_SECRET to the webhook's signing secret"
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        return "RESEND_WEBHOOK_SECRET is not a signing secret (whsec_ followed by base64)"
    return None


def svix_headers(request: Request[Any, Any, Any]) -> tuple[str, str, str]:
    """The three Svix headers, checked for shape (not yet for authenticity)."""
    headers = request.headers
    msg_id = headers.get("svix-id", "")
    timestamp = headers.get("svix-timestamp", "")
    signature = headers.get("svix-signature", "")
    named = {"svix-id": msg_id, "svix-timestamp": timestamp, "svix-signature": signature}
    missing = [name for name, value in named.items() if not value]
    if missing:
        raise HTTPException(status_code=400, detail=f"missing webhook headers: {', '.join(missing)}")
    if not _TOKEN.fullmatch(msg_id):
        raise HTTPException(status_code=400, detail="svix-id is malformed")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise HTTPException(status_code=400, detail="svix-timestamp must be seconds since the epoch")
    if len(signature) > MAX_SIGNATURE_HEADER:
        raise HTTPException(status_code=400, detail="svix-signature is too long")
    return msg_id, timestamp, signature


def verify(secret: str, msg_id: str, timestamp: str, signature: str, body: bytes, now: float) -> None:
    """Raise 401 unless `body` was signed with `secret` within the tolerance. The signature check itself is
    the Resend SDK's (HMAC-SHA256 over `id.timestamp.body`, constant-time compare); the timestamp is checked
    here first only to say which of the two failed."""
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise NotAuthorizedException(detail="webhook timestamp is outside the 5-minute tolerance")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(status_code=400, detail="the webhook body is not UTF-8") from None
    try:
        resend.Webhooks.verify(
            {
                "payload": payload,
                "headers": {"id": msg_id, "timestamp": timestamp, "signature": signature},
                "webhook_secret": secret,
            }
        )
    except RecursionError:
        # Signed, then too deeply nested to parse (the SDK parses what it verified).
        raise HTTPException(status_code=400, detail="the webhook body is not valid JSON") from None
    except ValueError as exc:
        # The SDK raises ValueError for a bad signature and, chained to the JSON error, for a signed body
        # that is not JSON.
        if isinstance(exc.__cause__, json.JSONDecodeError):
            raise HTTPException(status_code=400, detail="the webhook body is not valid JSON") from None
        raise NotAuthorizedException(detail="invalid webhook signature") from None


def _clean(text: str, limit: int) -> str | None:
    """`text` if it is short and free of control characters (they can reach neither Postgres nor logs)."""
    if len(text) > limit or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        return None
    return text


def created_at_of(webhook: ResendWebhook, fallback: float) -> float:
    """When the provider says the event happened (ISO 8601, UTC); `fallback` when it does not say."""
    try:
        moment = datetime.fromisoformat(webhook.created_at.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        return fallback


def provider_event(msg_id: str, webhook: ResendWebhook, signed_at: float) -> ProviderEvent:
    """The event to store, or 400 when a verified webhook lacks what the notifier needs."""
    data = webhook.data
    email_id = data.email_id.strip()
    if not email_id or not _TOKEN.fullmatch(email_id):
        raise HTTPException(status_code=400, detail="data.email_id is missing or malformed")
    recipients = [data.to] if isinstance(data.to, str) else data.to
    if len(recipients) > MAX_RECIPIENTS:
        raise HTTPException(status_code=400, detail="data.to names too many addresses")
    to: list[str] = []
    for address in recipients:
        clean = _clean(address.strip(), MAX_ADDRESS)
        if not clean:
            raise HTTPException(status_code=400, detail="data.to holds a malformed address")
        to.append(clean)
    bounce_type = _clean(data.bounce.type.strip(), 64) if data.bounce is not None else ""
    if bounce_type is None:
        raise HTTPException(status_code=400, detail="data.bounce.type is malformed")
    return ProviderEvent(
        svix_id=msg_id,
        type=webhook.type,
        email_id=email_id,
        to=tuple(to),
        bounce_type=bounce_type,
        created_at=created_at_of(webhook, signed_at),
    )


@post(
    "/api/v1/webhooks/resend",
    status_code=200,
    request_max_body_size=MAX_BODY,
    operation_class=json_body(
        {
            "type": Schema(type=OpenAPIType.STRING, examples=["email.delivered"]),
            "created_at": Schema(type=OpenAPIType.STRING),
            "data": Schema(
                type=OpenAPIType.OBJECT,
                examples=[{"email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "to": ["sparky@asu.edu"]}],
            ),
        },
        ["type"],
        'A Resend event, `{"type": "email.bounced", "created_at": "…", "data": {…}}`, signed in the svix-id,'
        " svix-timestamp and svix-signature headers.",
    ),
    responses=answers(
        {
            400: "Missing or malformed Svix headers, or a signed body that is not a usable Resend event.",
            401: "A bad signature, or a timestamp more than 5 minutes away.",
            409: "This svix id was already received: a replay, nothing happens again.",
            413: "The body is larger than 64 KiB.",
            415: NOT_JSON_TYPE,
            503: "Webhooks are not configured, or the event could not be stored: Resend retries.",
        }
    ),
)
async def resend_webhook(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> Response[WebhookAnswer]:
    """A Resend webhook (Svix-signed JSON).

    200 `{"status": "stored"}` once the event is in JetStream, or `{"status": "ignored"}` for an event type
    nothing acts on; 400 missing or malformed Svix headers, or a verified body that is not a usable event;
    401 bad signature or a timestamp outside 5 minutes; 409 a svix id already received (a replay: nothing
    happens again); 413 a body over 64 KiB; 503 when RESEND_WEBHOOK_SECRET is not set or the event could
    not be stored (with Retry-After: Resend retries).
    """
    secret = settings.resend_webhook_secret
    if (problem := secret_problem(secret)) is not None:
        log.error("webhook refused", reason=problem)
        raise ServiceUnavailable(detail=problem)
    msg_id, timestamp, signature = svix_headers(request)
    body = await request.body()
    if not body:
        raise HTTPException(status_code=400, detail="the webhook body is empty")
    verify(secret, msg_id, timestamp, signature, body, time.time())
    try:
        envelope = msgspec.json.decode(body, type=Envelope)
        if envelope.type not in HANDLED_TYPES:
            log.info("webhook ignored", svix_id=msg_id, type=envelope.type[:64])
            return Response(WebhookAnswer(status="ignored"))
        webhook = msgspec.json.decode(body, type=ResendWebhook)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise HTTPException(status_code=400, detail="the webhook body is not a Resend event") from None
    event = provider_event(msg_id, webhook, float(timestamp))
    try:
        ack = await js.publish(
            topology.provider_subject(event.type),
            encode(event),
            timeout=PUBLISH_TIMEOUT,
            headers={"Nats-Msg-Id": msg_id},
        )
    except (NatsError, TimeoutError, OSError) as exc:
        log.warning("webhook not stored", svix_id=msg_id, type=event.type, error=str(exc))
        raise ServiceUnavailable(
            detail="the event could not be stored; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    if ack.duplicate:
        log.info("webhook replayed", svix_id=msg_id, type=event.type)
        raise HTTPException(status_code=409, detail=f"webhook {msg_id} was already received")
    log.info("webhook stored", svix_id=msg_id, type=event.type, email_id=event.email_id, seq=ack.seq)
    return Response(WebhookAnswer(status="stored"))
