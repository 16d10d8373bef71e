from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from nats.js import JetStreamContext

from devtools import resend_fake
from services.notifier.backends import OutboxBackend, ResendBackend
from services.notifier.budget import Budget
from services.notifier.claims import ClaimKey, Owned, claim
from services.notifier.handlers import Notifier
from services.notifier.provider import ProviderState
from shared.events import encode
from shared.health import NotReady
from shared.settings import Settings
from shared.streams import Topology
from tests.factories import change
from tests.jetstream import fetch, lose_ack, quick_redelivery


async def add_watcher(db: asyncpg.Pool, email: str, class_nbr: str = "12345", **user: object) -> int:
    user_id = await db.fetchval(
        "INSERT INTO app_user (email, password_hash, notifications_enabled, email_status, email_verified)"
        " VALUES ($1, 'x', $2, $3, $4) RETURNING id",
        email,
        user.get("enabled", True),
        user.get("status", "ok"),
        user.get("verified", True),
    )
    watch_id: int = await db.fetchval(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, '2271', $2) RETURNING id",
        user_id,
        class_nbr,
    )
    return watch_id


async def outbox(db: asyncpg.Pool) -> list[str]:
    return [row["to_addr"] for row in await db.fetch("SELECT to_addr FROM outbox_email ORDER BY to_addr")]


async def publish_change(
    js: JetStreamContext, topology: Topology, kind: str, key: str, **state: object
) -> None:
    await js.publish(topology.change_subject(kind), encode(change(kind, key, **state)))


@asynccontextmanager
async def marking_sent_fails_once(db: asyncpg.Pool) -> AsyncIterator[None]:
    """Recording a send fails once inside PostgreSQL itself, after the provider took the emails."""
    await db.execute(
        """
        CREATE SEQUENCE fail_once;
        CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- nextval survives the rollback that the exception causes: the failure happens once.
            IF nextval('fail_once') = 1 THEN
                RAISE EXCEPTION 'injected failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_once BEFORE UPDATE ON notification FOR EACH ROW
            WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL) EXECUTE FUNCTION fail_once();
        """
    )
    try:
        yield
    finally:
        await db.execute(
            "DROP TRIGGER fail_once ON notification; DROP FUNCTION fail_once; DROP SEQUENCE fail_once"
        )


def resend_backend(settings: Settings, url: str) -> ResendBackend:
    return ResendBackend("re_test_key", url, budget=Budget(settings.redis_url, settings.namespace, 1000.0))


def notifier(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, backend: object
) -> Notifier:
    consumer = topology.notifier
    return Notifier(db, backend, js, topology, consumer, settings)  # type: ignore[arg-type]


async def test_eligible_watchers_get_one_email_each_and_a_redelivery_sends_nothing_more(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier)
    await add_watcher(db, "ada@example.edu")
    await add_watcher(db, "bob@example.edu")
    await add_watcher(db, "off@example.edu", enabled=False)
    await add_watcher(db, "unverified@example.edu", verified=False)
    await add_watcher(db, "bounced@example.edu", status="bounced")
    await add_watcher(db, "other@example.edu", class_nbr="99999")
    handler = Notifier(db, OutboxBackend(db), js, topology, consumer, settings)
    await publish_change(js, topology, "seat_opened", "snap-1", enrl_tot=99)
    [first] = await fetch(js, consumer)
    await handler.handle([lose_ack(first)])
    assert await outbox(db) == ["ada@example.edu", "bob@example.edu"]
    [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    await handler.handle([again])
    assert await outbox(db) == ["ada@example.edu", "bob@example.edu"]
    sent = await db.fetch("SELECT kind, change_key FROM notification WHERE sent_at IS NOT NULL")
    assert [(r["kind"], r["change_key"]) for r in sent] == [("seat_opened", "snap-1")] * 2


async def test_fill_is_not_emailed_and_the_next_opening_is(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await add_watcher(db, "ada@example.edu")
    handler = notifier(db, js, topology, settings, OutboxBackend(db))
    for kind, key in (("seat_opened", "s1"), ("seat_filled", "s2"), ("seat_opened", "s3")):
        await publish_change(js, topology, kind, key)
    await handler.handle(await fetch(js, topology.notifier, count=3))
    subjects = [r["subject"] for r in await db.fetch("SELECT subject FROM outbox_email")]
    assert subjects == ["Seat available: CSE 310 (12345)"] * 2


async def test_a_claim_left_by_a_dead_sender_is_taken_over_after_its_lease(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    watch_id = await add_watcher(db, "ada@example.edu")
    key = ClaimKey(watch_id, "seat_opened", "s1")
    assert await claim(db, [key], lease_seconds=15) == [Owned(key, None)]
    consumer = await quick_redelivery(js, topology, topology.notifier)
    handler = Notifier(db, OutboxBackend(db), js, topology, consumer, settings)
    await publish_change(js, topology, "seat_opened", "s1")
    await handler.handle(await fetch(js, consumer))
    assert await outbox(db) == [], "a fresh claim belongs to a live sender"
    [retry] = await fetch(js, consumer)
    assert retry.metadata.num_delivered == 2, "not acknowledged while another sender holds the claim"
    await db.execute("UPDATE notification SET claimed_at = now() - interval '1 minute'")
    await handler.handle([retry])
    assert await outbox(db) == ["ada@example.edu"]
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


@pytest.fixture
async def resend_url() -> AsyncIterator[str]:
    async with resend_fake.serve() as url:
        yield url


async def test_a_failed_send_releases_its_claims_and_the_retry_sends_once(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier)
    await add_watcher(db, "ada@example.edu")
    handler = Notifier(db, resend_backend(settings, resend_url), js, topology, consumer, settings)
    await resend_fake.set_faults(resend_url, 500, count=1)
    await publish_change(js, topology, "instructor_changed", "s9", instructors=("Ada Lovelace",))
    await handler.handle(await fetch(js, consumer))
    # Given back, not held: its batch is kept (the provider may have taken it) with the lease expired.
    [held] = await db.fetch("SELECT sent_at, claimed_at, batch_key FROM notification")
    assert held["sent_at"] is None
    assert held["batch_key"]
    assert held["claimed_at"].year == 1970, "the watcher must not stay silenced"
    assert handler.provider.paused() > 0
    handler.provider.succeeded()
    [retried] = await fetch(js, consumer)
    assert retried.metadata.num_delivered == 2
    await handler.handle([retried])
    emails = await resend_fake.fetch_emails(resend_url)
    assert [(e["to"], e["subject"]) for e in emails] == [
        (["ada@example.edu"], "Instructor assigned: CSE 310 (12345)")
    ]


async def test_a_database_failure_while_sending_loses_and_doubles_nothing(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    consumer = await quick_redelivery(js, topology, topology.notifier)
    for number in range(3):
        await add_watcher(db, f"student{number}@example.edu")
    # A real failure inside PostgreSQL: recording the sends fails once, after the emails went out.
    async with marking_sent_fails_once(db):
        handler = Notifier(db, OutboxBackend(db), js, topology, consumer, settings)
        await publish_change(js, topology, "seat_opened", "s1")
        await handler.handle(await fetch(js, consumer))
        assert (
            await db.fetchval(
                "SELECT count(*) FROM notification WHERE sent_at IS NULL AND claimed_at = 'epoch'"
            )
            == 3
        ), "claims given back with their batch, not left held"
        [retry] = await fetch(js, consumer)
        await handler.handle([retry])
    assert await outbox(db) == [f"student{n}@example.edu" for n in range(3)]
    assert await db.fetchval("SELECT count(*) FROM notification WHERE sent_at IS NOT NULL") == 3


async def test_a_refused_address_costs_only_its_own_email(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    for address in ("ada@example.edu", "two,addresses@example.edu", "bob@example.edu"):
        await add_watcher(db, address)
    handler = notifier(db, js, topology, settings, resend_backend(settings, resend_url))
    await publish_change(js, topology, "seat_opened", "s1")
    await handler.handle(await fetch(js, topology.notifier))
    delivered = sorted(e["to"][0] for e in await resend_fake.fetch_emails(resend_url))
    assert delivered == ["ada@example.edu", "bob@example.edu"]
    statuses = await db.fetch("SELECT email, email_status FROM app_user ORDER BY email")
    assert [(r["email"], r["email_status"]) for r in statuses] == [
        ("ada@example.edu", "ok"),
        ("bob@example.edu", "ok"),
        ("two,addresses@example.edu", "rejected"),
    ]
    info = await js.consumer_info(topology.notifier.stream, topology.notifier.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


class Clock:
    """A clock the test moves, so the provider's back-off (minutes in production) passes at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fast_provider(clock: Clock) -> ProviderState:
    """The provider's back-off on a clock the test moves, with NAK delays of a tenth of a second."""
    return ProviderState(clock, backoff=(0.1,))


@pytest.mark.parametrize("status", [401, 403, 422])
async def test_a_configuration_refusal_silences_nobody_and_everything_goes_out_once_fixed(
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
    resend_url: str,
    status: int,
) -> None:
    """A bad key, an unverified domain or an invalid sender on a one-email batch is our fault: the address
    is not marked, the claim stays unsent, /readyz says why, and the email goes out once it is fixed."""
    await resend_fake.reset(resend_url)
    consumer = await quick_redelivery(js, topology, topology.notifier)
    await add_watcher(db, "ada@example.edu")
    clock = Clock()
    handler = Notifier(
        db, resend_backend(settings, resend_url), js, topology, consumer, settings, fast_provider(clock)
    )
    await resend_fake.set_faults(resend_url, status, count=1)
    await publish_change(js, topology, "seat_opened", "s1")
    await handler.handle(await fetch(js, consumer))

    assert await db.fetchval("SELECT email_status FROM app_user") == "ok"
    assert await db.fetchval("SELECT count(*) FROM notification WHERE sent_at IS NULL") == 1
    with pytest.raises(NotReady, match=f"refuses our configuration.*{status}"):
        await handler.provider.check()()
    clock.now += 600
    [retry] = await fetch(js, consumer)
    await handler.handle([retry])
    assert [e["to"] for e in await resend_fake.fetch_emails(resend_url)] == [["ada@example.edu"]]
    await handler.provider.check()()
    assert await db.fetchval("SELECT count(*) FROM notification WHERE sent_at IS NOT NULL") == 1


async def test_an_outage_longer_than_any_retry_budget_loses_nothing_and_doubles_nothing(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    """Twenty failed deliveries (the old limit dead-lettered after ten, about 13 minutes): the change is
    still retried, never dead-lettered, and sent once when the provider is back."""
    await resend_fake.reset(resend_url)
    consumer = await quick_redelivery(js, topology, topology.notifier)
    assert consumer.max_deliver == -1
    await add_watcher(db, "ada@example.edu")
    await add_watcher(db, "bob@example.edu")
    clock = Clock()
    handler = Notifier(
        db, resend_backend(settings, resend_url), js, topology, consumer, settings, fast_provider(clock)
    )
    outage = 20
    await resend_fake.set_faults(resend_url, 503, count=outage)
    await publish_change(js, topology, "seat_opened", "s1")
    for attempt in range(1, outage + 2):
        [msg] = await fetch(js, consumer)
        assert msg.metadata.num_delivered == attempt
        clock.now += 600
        await handler.handle([msg])
    assert sorted(e["to"][0] for e in await resend_fake.fetch_emails(resend_url)) == [
        "ada@example.edu",
        "bob@example.edu",
    ]
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_crash_after_the_provider_accepted_then_a_different_grouping_sends_nothing_twice(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings, resend_url: str
) -> None:
    """Two changes sent in one provider batch; recording the send fails (as a crash right after the
    provider accepted would leave it); the changes come back one by one: the stored batch is repeated
    under the same idempotency key, so the provider delivers nothing twice."""
    await resend_fake.reset(resend_url)
    consumer = await quick_redelivery(js, topology, topology.notifier)
    await add_watcher(db, "ada@example.edu", class_nbr="11111")
    await add_watcher(db, "bob@example.edu", class_nbr="22222")
    async with marking_sent_fails_once(db):
        handler = Notifier(db, resend_backend(settings, resend_url), js, topology, consumer, settings)
        await publish_change(js, topology, "seat_opened", "a1", class_nbr="11111")
        await publish_change(js, topology, "seat_opened", "b1", class_nbr="22222")
        await handler.handle(await fetch(js, consumer, count=2))
        assert len(await resend_fake.fetch_emails(resend_url)) == 2, "the provider took the batch"
        first, second = await fetch(js, consumer, count=2)
        await handler.handle([second])
        await handler.handle([first])
    emails = await resend_fake.fetch_emails(resend_url)
    assert sorted(e["to"][0] for e in emails) == ["ada@example.edu", "bob@example.edu"]
    assert len({e["idempotency_key"] for e in emails}) == 1
    assert await resend_fake.fetch_send_calls(resend_url) == 2
    assert await db.fetchval("SELECT count(*) FROM notification WHERE sent_at IS NOT NULL") == 2


async def test_a_student_an_admin_disabled_gets_no_alerts(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await add_watcher(db, "ada@example.edu")
    disabled = await add_watcher(db, "disabled@example.edu")
    await db.execute(
        "UPDATE app_user SET disabled_at = now() WHERE id = (SELECT user_id FROM watch WHERE id = $1)",
        disabled,
    )
    handler = notifier(db, js, topology, settings, OutboxBackend(db))
    await publish_change(js, topology, "seat_opened", "snap-1")
    await handler.handle(await fetch(js, topology.notifier))
    assert await outbox(db) == ["ada@example.edu"]
    assert await db.fetchval("SELECT count(*) FROM notification WHERE watch_id = $1", disabled) == 0
