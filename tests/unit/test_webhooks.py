"""Pure parts of the provider webhooks: signing and verification, the event the gateway stores, what the
notifier makes of it, and the alert and notification inputs of the API."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
import resend
from litestar.exceptions import HTTPException

from devtools.resend_webhooks import email_event, new_secret, sign, signed_headers
from services.gateway.notifications import parse_limit
from services.gateway.watches import AlertChoices, alerts_of, validate_alerts
from services.gateway.webhooks import (
    TOLERANCE_SECONDS,
    ResendWebhook,
    provider_event,
    secret_problem,
    verify,
)
from services.notifier.provider_events import effects_of, stops, storable
from shared.alerts import DEFAULT_ALERTS
from shared.events import ProviderEvent

# The Standard Webhooks / Svix published test vector: any correct signer reproduces it.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signer_reproduces_the_svix_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_sdk_verifies_the_test_vector_at_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: VECTOR_TIMESTAMP + 10.0)
    verify(VECTOR_SECRET, VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_SIGNATURE, VECTOR_BODY, time.time())


def test_a_fresh_signature_verifies_and_a_changed_byte_does_not() -> None:
    secret = new_secret()
    body = json.dumps(email_event("email.delivered", "em-1", ["a@asu.edu"])).encode()
    headers = signed_headers(secret, body)
    resend.Webhooks.verify(
        {
            "payload": body.decode(),
            "headers": {
                "id": headers["svix-id"],
                "timestamp": headers["svix-timestamp"],
                "signature": headers["svix-signature"],
            },
            "webhook_secret": secret,
        }
    )
    args = (headers["svix-id"], headers["svix-timestamp"], headers["svix-signature"])
    now = float(headers["svix-timestamp"])
    verify(secret, *args, body, now)
    with pytest.raises(HTTPException) as refused:
        verify(secret, *args, body.replace(b"em-1", b"em-2"), now)
    assert refused.value.status_code == 401
    with pytest.raises(HTTPException, match="tolerance"):
        verify(secret, *args, body, now + TOLERANCE_SECONDS + 1)


def test_signed_bodies_that_are_not_json_are_a_400_not_a_401() -> None:
    secret = new_secret()
    for body in (b"not json", b"[" * 5000 + b"]" * 5000):
        headers = signed_headers(secret, body)
        with pytest.raises(HTTPException) as refused:
            verify(
                secret,
                headers["svix-id"],
                headers["svix-timestamp"],
                headers["svix-signature"],
                body,
                float(headers["svix-timestamp"]),
            )
        assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("", "set RESEND_WEBHOOK_SECRET"),
        ("whsec_", "not a signing secret"),
        ("whsec_not base64!", "not a signing secret"),
        (VECTOR_SECRET, None),
        (VECTOR_SECRET.removeprefix("whsec_"), None),
    ],
)
def test_the_secret_is_checked(secret: str, problem: str | None) -> None:
    found = secret_problem(secret)
    assert found is None if problem is None else problem in (found or "")


def webhook(payload: dict[str, object]) -> ResendWebhook:
    return msgspec.convert(payload, ResendWebhook)


def test_the_stored_event_keeps_what_the_notifier_needs() -> None:
    event = provider_event(
        "msg_1",
        webhook(email_event("email.bounced", "em-1", ["A@asu.edu"], bounce_type="Permanent", created_at=1e9)),
        5.0,
    )
    assert event == ProviderEvent(
        svix_id="msg_1",
        type="email.bounced",
        email_id="em-1",
        to=("A@asu.edu",),
        bounce_type="Permanent",
        created_at=1e9,
    )
    lone = webhook(
        {"type": "email.delivered", "created_at": "garbage", "data": {"email_id": "e", "to": "x@y.z"}}
    )
    assert provider_event("msg_2", lone, 5.0).to == ("x@y.z",)
    assert provider_event("msg_2", lone, 5.0).created_at == 5.0, (
        "the signed time when created_at is unreadable"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"email_id": ""},
        {"email_id": "e m"},
        {"email_id": "e" * 201},
        {"email_id": "e", "to": ["a@b.c\u0000"]},
        {"email_id": "e", "to": ["a" * 321]},
        {"email_id": "e", "to": ["a@b.c"] * 51},
        {"email_id": "e", "bounce": {"type": "Perm\nanent"}},
    ],
)
def test_unusable_events_are_a_400(data: dict[str, object]) -> None:
    with pytest.raises(HTTPException) as refused:
        provider_event("msg", webhook({"type": "email.bounced", "data": data}), 1.0)
    assert refused.value.status_code == 400


def event(
    kind: str, email_id: str = "em-1", bounce_type: str = "", to: tuple[str, ...] = ("A@asu.edu",)
) -> ProviderEvent:
    return ProviderEvent(
        svix_id=f"msg-{email_id}-{kind}",
        type=kind,
        email_id=email_id,
        to=to,
        bounce_type=bounce_type,
        created_at=1.0,
    )


@pytest.mark.parametrize(
    ("provider_event_", "status"),
    [
        (event("email.bounced", bounce_type="Permanent"), "bounced"),
        (event("email.bounced", bounce_type="permanent"), "bounced"),
        (event("email.bounced", bounce_type=""), "bounced"),
        (event("email.bounced", bounce_type="Transient"), None),
        (event("email.bounced", bounce_type="Undetermined"), None),
        (event("email.complained"), "complained"),
        (event("email.delivered"), None),
    ],
)
def test_hard_bounces_and_complaints_stop_an_address(
    provider_event_: ProviderEvent, status: str | None
) -> None:
    assert stops(provider_event_) == status


def test_effects_keep_the_first_report_of_a_batch() -> None:
    effects = effects_of(
        [
            event("email.delivered", "em-1"),
            event("email.complained", "em-2", to=("Sparky@ASU.edu",)),
            event("email.bounced", "em-3", "Permanent", to=("sparky@asu.edu",)),
            event("email.bounced", "em-4", "Transient", to=("other@asu.edu",)),
        ]
    )
    assert effects.delivered == {"em-1": 1.0}
    assert effects.bounced == {"em-2": 1.0, "em-3": 1.0}
    assert effects.stopped == {"sparky@asu.edu": "complained"}


def test_what_postgres_cannot_store_is_recognised() -> None:
    assert storable(event("email.delivered"))
    assert not storable(event("email.delivered", "em\u00001"))
    assert not storable(event("email.bounced", to=("a\u0000@b.c",)))


def test_alert_choices_are_validated() -> None:
    assert validate_alerts(AlertChoices(alerts={"closed_again": True})) is None
    assert validate_alerts(AlertChoices(alerts={})) is None
    assert "send alerts" in (validate_alerts(AlertChoices()) or "")
    assert "unknown alert kind 'seat_filled'" in (
        validate_alerts(AlertChoices(alerts={"seat_filled": True})) or ""
    )


def test_stored_alerts_are_completed_with_the_defaults() -> None:
    assert alerts_of(None) == DEFAULT_ALERTS
    assert alerts_of('{"seat_opened": false}') == DEFAULT_ALERTS | {"seat_opened": False}
    assert alerts_of('{"seat_opened": true, "retired_kind": true}') == DEFAULT_ALERTS


@pytest.mark.parametrize(("raw", "limit"), [(None, 100), ("", 100), ("1", 1), ("100", 100)])
def test_the_limit_defaults_to_100(raw: str | None, limit: int) -> None:
    assert parse_limit(raw) == limit


@pytest.mark.parametrize("raw", ["0", "101", "-1", "ten", "1.5", "٣", "9" * 400])
def test_other_limits_are_a_422(raw: str) -> None:
    with pytest.raises(HTTPException) as refused:
        parse_limit(raw)
    assert refused.value.status_code == 422
