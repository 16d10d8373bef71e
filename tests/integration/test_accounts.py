"""Verification and password reset against real NATS, PostgreSQL and Redis: the gateway's endpoints and links,
and the notifier's account handler sending what the gateway asked for (outbox, or the Resend fake)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as redis
from limits import RateLimitItemPerMinute
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from devtools import resend_fake
from services.gateway import emails, throttle
from services.gateway.app import create_app
from services.notifier.account import AccountMailer
from services.notifier.backends import OutboxBackend, ResendBackend
from services.notifier.budget import Budget
from services.notifier.email import account_idempotency_id
from shared.db import ensure_database, migrate, migration_files, with_database
from shared.events import AccountEmail, encode
from shared.settings import Settings
from shared.streams import Consumer, Topology
from shared.tokens import RESET_PASSWORD, VERIFY_EMAIL, sign_until
from tests.accounts import PASSWORD, account_emails, link_path, sign_up
from tests.infra import Servers
from tests.integration.test_gateway import forget_keys
from tests.jetstream import fetch, lose_ack, quick_redelivery

Client = AsyncTestClient[Litestar]
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


def mailer(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, consumer: Consumer
) -> AccountMailer:
    return AccountMailer(OutboxBackend(db), js, topology, consumer, settings)


async def outbox(db: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT id, to_addr, subject, text_body, html_body FROM outbox_email ORDER BY created_at"
        )
    )


async def send_all(handler: AccountMailer, js: JetStreamContext, consumer: Consumer, count: int) -> None:
    await handler.handle(await fetch(js, consumer, count=count))


def link_in(text: str, path: str) -> str:
    """The path and query of the first `{site}{path}?token=` link in an email's text."""
    [url] = [word for word in text.split() if urlsplit(word).path == path and "token=" in word]
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def register(client: Client, email: str, password: str = PASSWORD) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 202, response.text
    assert response.json() == {"message": "check your email to verify your address"}


async def user_row(db: asyncpg.Pool, email: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT id, email_verified, password_hash FROM app_user WHERE email = $1", email)
    assert row is not None
    return row


# Registration


async def test_a_new_address_gets_a_verification_email_and_no_session(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await register(client, "sparky@asu.edu")
    assert "pmc_session" not in client.cookies
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    assert (await user_row(db, "sparky@asu.edu"))["email_verified"] is False
    [event] = await account_emails(js, topology)
    raw = await js.get_last_msg(topology.account_stream, topology.account_subject("verify"))
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"].startswith(f"account:verify:{event.user_id}:")
    assert event.nonce not in raw.headers["Nats-Msg-Id"], "message ids are logged; nonces are not"

    await send_all(
        mailer(db, js, topology, settings, topology.notifier_account), js, topology.notifier_account, 1
    )
    [email] = await outbox(db)
    assert email["to_addr"] == "sparky@asu.edu"
    assert email["subject"] == "Verify your email for PickMyClass"
    link = link_in(email["text_body"], "/verify")
    assert f"{settings.site_url}{link}" in email["html_body"].replace("&amp;", "&")

    verified = await client.get(link, follow_redirects=False)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/?verified=1"
    assert verified.headers["cache-control"] == "no-store"
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["email"] == "sparky@asu.edu"
    assert (await user_row(db, "sparky@asu.edu"))["email_verified"] is True


async def test_a_taken_address_gets_the_same_answer_and_a_throttled_notice(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    user_id = await sign_up(client, js, topology, settings, "sparky@asu.edu")
    before = await user_row(db, "sparky@asu.edu")
    client.cookies.clear()

    await register(client, "SPARKY@asu.edu", "someone else's password")
    await register(client, "sparky@asu.edu", "and another one")
    assert "pmc_session" not in client.cookies

    notices = [event for event in await account_emails(js, topology) if event.kind == "already_registered"]
    assert [(event.user_id, event.to) for event in notices] == [(user_id, "sparky@asu.edu")], (
        "one notice per 15 minutes, to the stored address"
    )
    # The account is untouched: its password still works, the attempted ones do not.
    assert (await user_row(db, "sparky@asu.edu"))["password_hash"] == before["password_hash"]
    assert await db.fetchval("SELECT count(*) FROM app_user") == 1

    consumer = topology.notifier_account
    await send_all(mailer(db, js, topology, settings, consumer), js, consumer, 2)
    [_, notice] = await outbox(db)
    assert notice["subject"] == "Someone tried to register with your address"
    assert "token=" not in notice["text_body"]
    assert f"{settings.site_url}/#forgot" in notice["text_body"]


async def test_registering_an_unverified_address_again_sends_a_new_link_and_keeps_the_password(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    await register(client, "sparky@asu.edu", PASSWORD)
    first = await user_row(db, "sparky@asu.edu")
    await register(client, "sparky@asu.edu", "an attacker's password")
    assert (await user_row(db, "sparky@asu.edu"))["password_hash"] == first["password_hash"]
    links = await account_emails(js, topology, "sparky@asu.edu")
    assert [event.kind for event in links] == ["verify", "verify"]
    assert links[0].nonce != links[1].nonce


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("sparky\x00@asu.edu", "email must look like name@example.edu"),
        ("sparky@asu.edu\x00", "email must look like name@example.edu"),
        ("spa\u202erky@asu.edu", "email must look like name@example.edu"),
        ("x" * 300 + "@asu.edu", "email must look like name@example.edu"),
        ("", "email is required"),
    ],
)
async def test_hostile_addresses_are_refused_with_a_message(
    client: Client, js: JetStreamContext, topology: Topology, email: str, message: str
) -> None:
    for path in ("/api/v1/auth/register", "/api/v1/auth/verification/resend", "/api/v1/auth/password/forgot"):
        response = await client.post(path, json={"email": email, "password": PASSWORD})
        assert response.status_code == 422, (path, response.text)
        assert response.json() == {"detail": message}
    assert await account_emails(js, topology) == []


async def test_hostile_log_ins_are_wrong_credentials_not_errors(client: Client) -> None:
    for email, password in [
        ("sparky\x00@asu.edu", PASSWORD),
        ("x" * 10_000, PASSWORD),
        ("sparky@asu.edu", "p" * 10_000),
        ("\U0001f600@\u202e.edu", "\x00" * 10),
        ("v\u0130cki@asu.edu", PASSWORD),
    ]:
        response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 401, response.text
    for body in (
        {"email": "x" * 100_000, "password": PASSWORD},
        {"email": "a@asu.edu", "password": "p" * 20_000},
    ):
        too_large = await client.post("/api/v1/auth/login", json=body)
        assert too_large.status_code == 413
        assert too_large.json() == {"detail": "the request body is too large (at most 16 KB)"}
    lone_surrogate = await client.post(
        "/api/v1/auth/login",
        content=b'{"email": "a\\ud800@asu.edu", "password": "x"}',
        headers={"Content-Type": "application/json"},
    )
    assert lone_surrogate.status_code == 400


# Logging in before verifying


async def test_an_unverified_account_cannot_log_in_and_can_ask_for_a_new_link(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await register(client, "sparky@asu.edu")
    refused = await client.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD})
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "confirm your email address first: open the link we emailed you, or ask for a new one"
    }
    assert "pmc_session" not in client.cookies
    # The 403 needs the right password: a wrong one is the usual 401.
    wrong = await client.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": "x" * 9})
    assert wrong.status_code == 401

    resent = await client.post("/api/v1/auth/verification/resend", json={"email": "Sparky@ASU.edu"})
    assert resent.status_code == 202
    first, second = await account_emails(js, topology, "sparky@asu.edu")
    assert (first.kind, second.kind) == ("verify", "verify")

    # The newer link works; the older one is spent with it (only one account to verify).
    assert (await client.get(link_path(settings, second), follow_redirects=False)).status_code == 303
    old = await client.get(link_path(settings, first), follow_redirects=False)
    assert old.status_code == 410
    assert "already used" in old.text
    client.cookies.clear()
    logged_in = await client.post(
        "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD}
    )
    assert logged_in.status_code == 200


async def test_resend_and_forgot_answer_the_same_whatever_the_address(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "verified@asu.edu")
    emails_before = len(await account_emails(js, topology))
    answers = set()
    for email in ("verified@asu.edu", "nobody@asu.edu"):
        resend = await client.post("/api/v1/auth/verification/resend", json={"email": email})
        assert resend.status_code == 202
        answers.add(resend.text)
    assert answers == {
        '{"message":"if this address has an account waiting for verification, a new link is on its way"}'
    }
    assert len(await account_emails(js, topology)) == emails_before, (
        "nothing for a verified or unknown address"
    )

    forgot = {
        (await client.post("/api/v1/auth/password/forgot", json={"email": email})).text
        for email in ("verified@asu.edu", "nobody@asu.edu")
    }
    assert forgot == {
        '{"message":"if this address has an account, a link to choose a new password is on its way"}'
    }
    assert [event.kind for event in await account_emails(js, topology)][emails_before:] == ["reset"]


async def test_account_emails_to_one_address_are_throttled(
    client: Client, js: JetStreamContext, topology: Topology
) -> None:
    await register(client, "sparky@asu.edu")
    for _ in range(5):
        assert (
            await client.post("/api/v1/auth/verification/resend", json={"email": "sparky@asu.edu"})
        ).status_code == 202
    for _ in range(5):
        assert (
            await client.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
        ).status_code == 202
    kinds = [event.kind for event in await account_emails(js, topology, "sparky@asu.edu")]
    assert kinds == ["verify"] * 3 + ["reset"] * 3, "3 of each kind an hour"


async def test_one_network_is_throttled_across_the_account_endpoints(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle, "ACCOUNT_REQUESTS_PER_CLIENT", RateLimitItemPerMinute(4, 15))
    paths = ["/api/v1/auth/verification/resend", "/api/v1/auth/password/forgot"] * 2
    for path in paths:
        assert (await client.post(path, json={"email": "a@asu.edu"})).status_code == 202
    refused = await client.post("/api/v1/auth/register", json={"email": "b@asu.edu", "password": PASSWORD})
    assert refused.status_code == 429
    assert refused.json() == {"detail": "too many requests from your network: try again in a few minutes"}
    assert 0 < int(refused.headers["retry-after"]) <= 900


# The verification link


async def test_a_verification_link_works_once(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await register(client, "sparky@asu.edu")
    [event] = await account_emails(js, topology, "sparky@asu.edu")
    links = await asyncio.gather(
        *(client.get(link_path(settings, event), follow_redirects=False) for _ in range(4))
    )
    assert sorted(response.status_code for response in links) == [303, 410, 410, 410]


async def test_bad_verification_links_are_pages_that_say_what_to_do(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await register(client, "sparky@asu.edu")
    [event] = await account_emails(js, topology, "sparky@asu.edu")
    secret = settings.secret_key
    cases = {
        "not ours": ("/verify?token=garbage", 400, "not valid"),
        "no token": ("/verify", 400, "not valid"),
        "empty": ("/verify?token=", 400, "not valid"),
        "NUL": ("/verify?token=%00abc.1.x", 400, "not valid"),
        # httpx sends URLs up to 64 KiB.
        "huge": ("/verify?token=" + "a" * 60_000, 400, "not valid"),
        "odd unicode": ("/verify?token=%E2%80%AE%F0%9F%98%80.9999999999.sig", 400, "not valid"),
        "signature expired": (
            f"/verify?token={sign_until(secret, VERIFY_EMAIL, event.nonce, time.time() - 1)}",
            410,
            "expired",
        ),
        "a reset token": (
            f"/verify?token={sign_until(secret, RESET_PASSWORD, event.nonce, event.expires_at)}",
            400,
            "not valid",
        ),
        "signed but never stored": (
            f"/verify?token={sign_until(secret, VERIFY_EMAIL, 'unknown-nonce', event.expires_at)}",
            400,
            "not valid",
        ),
    }
    for name, (path, status, words) in cases.items():
        response = await client.get(path, follow_redirects=False)
        assert response.status_code == status, (name, response.text[:200])
        assert response.headers["content-type"].startswith("text/html"), name
        assert words in response.text, name
        assert "Traceback" not in response.text
    # Expired in the database while its signature still holds (the two expiries agree; this one is stored).
    await db.execute("UPDATE account_token SET expires_at = now() - interval '1 second'")
    expired = await client.get(link_path(settings, event), follow_redirects=False)
    assert expired.status_code == 410
    assert "Verification links work for 24 hours" in expired.text
    assert "pmc_session" not in client.cookies


# Password reset


async def test_a_reset_link_sets_the_password_and_ends_every_session(
    settings: Settings,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
) -> None:
    # Two devices: each test client runs its app in a loop of its own, so each gets an app of its own.
    async with (
        AsyncTestClient(app=create_app(settings)) as laptop,
        AsyncTestClient(app=create_app(settings)) as phone,
    ):
        await sign_up(laptop, js, topology, settings, "sparky@asu.edu")
        login = await phone.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD})
        assert login.status_code == 200
        assert (await phone.get("/api/v1/auth/me")).status_code == 200

        assert (
            await phone.post("/api/v1/auth/password/forgot", json={"email": "SPARKY@asu.edu"})
        ).status_code == 202
        consumer = topology.notifier_account
        await send_all(mailer(db, js, topology, settings, consumer), js, consumer, 2)
        reset_email = [row for row in await outbox(db) if row["subject"] == "Reset your PickMyClass password"]
        link = link_in(reset_email[0]["text_body"], "/reset")

        page = await laptop.get(link)
        assert page.status_code == 200
        assert 'id="reset-form"' in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        # Showing the form spends nothing: a mail scanner that fetches the link breaks nothing.
        assert (await laptop.get(link)).status_code == 200

        token = link.split("token=")[1]
        too_short = await laptop.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": "short"}
        )
        assert too_short.status_code == 422
        done = await laptop.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
        )
        assert done.status_code == 204, done.text

        for device in (laptop, phone):
            assert (await device.get("/api/v1/auth/me")).status_code == 401
        old = await phone.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD})
        assert old.status_code == 401
        new = await phone.post(
            "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": NEW_PASSWORD}
        )
        assert new.status_code == 200

        again = await laptop.post("/api/v1/auth/password/reset", json={"token": token, "password": "x" * 12})
        assert again.status_code == 410
        assert again.json() == {"detail": "this reset link was already used: ask for a new one"}
        used_page = await laptop.get(link)
        assert used_page.status_code == 410
        assert "already used" in used_page.text
    await forget_keys(redis_client, settings.namespace)


async def test_a_reset_link_verifies_an_unverified_address(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await register(client, "sparky@asu.edu")
    await client.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
    [reset] = [event for event in await account_emails(js, topology) if event.kind == "reset"]
    token = link_path(settings, reset).split("token=")[1]
    response = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert response.status_code == 204
    assert (await user_row(db, "sparky@asu.edu"))["email_verified"] is True
    login = await client.post(
        "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_a_reset_clears_the_log_in_lock(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "sparky@asu.edu")
    for _ in range(6):
        await client.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": "guess" * 3})
    locked = await client.post("/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD})
    assert locked.status_code == 429
    await client.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
    [reset] = [event for event in await account_emails(js, topology) if event.kind == "reset"]
    token = link_path(settings, reset).split("token=")[1]
    assert (
        await client.post("/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})
    ).status_code == 204
    login = await client.post(
        "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_two_resets_with_one_link_cannot_both_succeed(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "sparky@asu.edu")
    await client.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
    [reset] = [event for event in await account_emails(js, topology) if event.kind == "reset"]
    token = link_path(settings, reset).split("token=")[1]
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/password/reset", json={"token": token, "password": f"{NEW_PASSWORD} {n}"}
            )
            for n in range(3)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [204, 410, 410]


async def test_bad_reset_tokens_are_4xx_with_a_message(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "sparky@asu.edu")
    await client.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
    [reset] = [event for event in await account_emails(js, topology) if event.kind == "reset"]
    secret = settings.secret_key
    verify_token = sign_until(secret, VERIFY_EMAIL, reset.nonce, reset.expires_at)
    expired_token = sign_until(secret, RESET_PASSWORD, reset.nonce, time.time() - 1)
    for token, status in [
        ("", 400),
        ("garbage", 400),
        ("\x00" * 20, 400),
        ("\u202e.1.\U0001f600", 400),
        ("a" * 15_000, 400),
        (verify_token, 400),
        (expired_token, 410),
    ]:
        response = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
        )
        assert response.status_code == status, (token[:30], response.text)
        assert response.json()["detail"].startswith("this reset link ")
        page = await client.get("/reset", params={"token": token})
        assert page.status_code == status
        assert "Ask for a new link" in page.text
    wrong_type = await client.post("/api/v1/auth/password/reset", json={"token": 5, "password": NEW_PASSWORD})
    assert wrong_type.status_code == 422
    await db.execute(
        "UPDATE account_token SET expires_at = now() - interval '1 second' WHERE purpose = 'reset'"
    )
    stale = link_path(settings, reset).split("token=")[1]
    response = await client.post(
        "/api/v1/auth/password/reset", json={"token": stale, "password": NEW_PASSWORD}
    )
    assert response.status_code == 410
    assert response.json() == {
        "detail": "this reset link has expired (they work for one hour): ask for a new one"
    }


# The notifier's account handler


@pytest.fixture
async def resend_url() -> AsyncIterator[str]:
    async with resend_fake.serve() as url:
        yield url


def resend_mailer(
    js: JetStreamContext, topology: Topology, settings: Settings, consumer: Consumer, url: str
) -> AccountMailer:
    backend = ResendBackend("re_test_key", url, budget=Budget(settings.redis_url, settings.namespace, 1000.0))
    return AccountMailer(backend, js, topology, consumer, settings)


def verify_event(
    to: str = "sparky@asu.edu", nonce: str = "nonce-1", expires_in: float = 3600.0
) -> AccountEmail:
    now = time.time()
    return AccountEmail(
        kind="verify", user_id=7, to=to, nonce=nonce, expires_at=now + expires_in, requested_at=now
    )


async def test_a_redelivered_account_email_is_sent_once(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier_account)
    event = verify_event()
    await js.publish(topology.account_subject("verify"), encode(event))

    # The provider: the same request again under the same key is recognised, not delivered twice.
    handler = resend_mailer(js, topology, settings, consumer, resend_url)
    [first] = await fetch(js, consumer)
    await handler.handle([lose_ack(first)])
    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    await handler.handle([again])
    [sent] = await resend_fake.fetch_emails(resend_url)
    assert sent["to"] == ["sparky@asu.edu"]
    assert sent["subject"] == "Verify your email for PickMyClass"
    assert await resend_fake.fetch_send_calls(resend_url) == 2
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)

    # The development outbox: stored once under the email's id.
    await js.publish(topology.account_subject("verify"), encode(event))
    outbox_handler = mailer(db, js, topology, settings, consumer)
    [first] = await fetch(js, consumer)
    await outbox_handler.handle([lose_ack(first)])
    [again] = await fetch(js, consumer)
    await outbox_handler.handle([again])
    assert [row["id"] for row in await outbox(db)] == [account_idempotency_id(event)]


async def test_a_provider_outage_retries_without_losing_the_email(
    js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier_account)
    handler = resend_mailer(js, topology, settings, consumer, resend_url)
    await resend_fake.set_faults(resend_url, 503, count=1)
    await js.publish(topology.account_subject("verify"), encode(verify_event()))
    await handler.handle(await fetch(js, consumer))
    assert await resend_fake.fetch_emails(resend_url) == []
    assert handler.provider.paused() > 0
    handler.provider.succeeded()
    [retry] = await fetch(js, consumer)
    assert retry.metadata.num_delivered == 2
    await handler.handle([retry])
    assert len(await resend_fake.fetch_emails(resend_url)) == 1


async def test_a_refused_address_or_an_expired_link_is_settled_without_an_email(
    js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier_account)
    handler = resend_mailer(js, topology, settings, consumer, resend_url)
    await resend_fake.refuse(resend_url, ["refused@asu.edu"])
    await js.publish(topology.account_subject("verify"), encode(verify_event(to="refused@asu.edu")))
    await js.publish(topology.account_subject("verify"), encode(verify_event(nonce="n2", expires_in=-1)))
    await js.publish(topology.account_subject("reset"), b"not an account email")
    await handler.handle(await fetch(js, consumer, count=3))
    assert await resend_fake.fetch_emails(resend_url) == []
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "all settled: acked or dead-lettered"


# Migration 0005


async def test_accounts_that_predate_verification_stay_verified(servers: Servers) -> None:
    name = f"pmc_test_{uuid.uuid4().hex[:10]}"
    url = with_database(servers.database_url, name)
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        before = [(version, sql) for version, sql in migration_files() if version < "0005"]
        await conn.execute(
            "CREATE TABLE schema_migration"
            " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in before:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migration (version) VALUES ($1)", version)
        await conn.execute("INSERT INTO app_user (email, password_hash) VALUES ('old@asu.edu', 'x')")
        assert "0005_accounts" in await migrate(conn)
        await conn.execute("INSERT INTO app_user (email, password_hash) VALUES ('new@asu.edu', 'x')")
        rows = await conn.fetch("SELECT email, email_verified FROM app_user ORDER BY id")
        assert [(row["email"], row["email_verified"]) for row in rows] == [
            ("old@asu.edu", True),
            ("new@asu.edu", False),
        ]
    finally:
        await conn.close()
        admin = await asyncpg.connect(servers.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# Migration 0009


async def test_existing_accounts_get_their_canonical_address(servers: Servers) -> None:
    name = f"pmc_test_{uuid.uuid4().hex[:10]}"
    url = with_database(servers.database_url, name)
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migration"
            " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            if version < "0009":
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migration (version) VALUES ($1)", version)
        old = ["Sparky@ASU.edu", "Stra\u00dfe@uni.de", "STRASSE@uni.de", "\uff4aose@uni.es"]
        for email in old:
            await conn.execute("INSERT INTO app_user (email, password_hash) VALUES ($1, 'x')", email)
        assert "0009_accounts" in await migrate(conn)
        rows = await conn.fetch("SELECT id, email, email_canonical FROM app_user ORDER BY id")
        assert [row["email"] for row in rows] == old, "what the student typed is kept"
        canonical = [row["email_canonical"] for row in rows]
        assert canonical[0] == emails.canonical(old[0])
        assert canonical[1] == emails.canonical(old[1]) == "strasse@uni.de"
        # Two old accounts that are one address now: the older keeps it, the newer can no longer match.
        assert canonical[2] == f"strasse@uni.de duplicate of {rows[1]['id']}"
        assert canonical[3] == emails.canonical(old[3]) == "jose@uni.es"
        # Rows written by other tools get the same form; the unique index holds.
        await conn.execute("INSERT INTO app_user (email, password_hash) VALUES ('New@ASU.edu', 'x')")
        assert await conn.fetchval("SELECT email_canonical FROM app_user WHERE email = 'New@ASU.edu'") == (
            "new@asu.edu"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO app_user (email, password_hash) VALUES ('NEW@asu.edu', 'x')")
    finally:
        await conn.close()
        admin = await asyncpg.connect(servers.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
