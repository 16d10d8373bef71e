"""What the email provider reported about emails it accepted (Resend webhooks, stored in JetStream by the
gateway): delivered, bounced for good, or marked as spam.

- `email.delivered`: the notification with that provider id gets `delivered_at`.
- `email.bounced` (hard) and `email.complained`: the notification gets `bounced_at`, and the address gets
  no more email: `app_user.email_status` becomes `bounced` or `complained` (the recipients query sends
  only to `ok`). A soft bounce changes nothing: the next email may well arrive.

Every statement keeps the first report (`COALESCE`, `email_status = 'ok'` guards), so a redelivered event
changes nothing, and a batch is one transaction: applied whole, or retried whole.

A report can overtake the notifier's own record of the send (the provider answered, the webhook came back
before `sent_at`/`provider_id` were stored): an event whose email is not known yet is retried a few times
before it is let go. Emails that are not alerts (account emails) are never known here; their bounces
still stop the address at the first delivery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.db import Pool, create_pool
from shared.delivery import Settler
from shared.events import ProviderEvent
from shared.service import ServiceContext
from shared.streams import Consumer, Topology

log = structlog.get_logger()

DELIVERED, BOUNCED, COMPLAINED = "email.delivered", "email.bounced", "email.complained"
# Resend passes on the receiving server's classification; `Permanent` is the hard one. An event without
# one is taken as hard: Resend documents email.bounced as a permanent rejection, and older payloads carry
# no bounce details at all.
HARD_BOUNCE_TYPES = frozenset({"permanent", "hard", ""})
# Deliveries of an event whose email is not (yet) recorded as sent before it is let go: with the
# consumer's retry delays (1, 5, 15, 60 s) about a minute and a half for the send to be recorded.
UNKNOWN_EMAIL_DELIVERIES = 5

MARK_DELIVERED = """
UPDATE notification AS n SET delivered_at = COALESCE(n.delivered_at, to_timestamp(e.at))
FROM unnest($1::text[], $2::float8[]) AS e(provider_id, at)
WHERE n.provider_id = e.provider_id
RETURNING n.provider_id
"""

MARK_BOUNCED = """
UPDATE notification AS n SET bounced_at = COALESCE(n.bounced_at, to_timestamp(e.at))
FROM unnest($1::text[], $2::float8[]) AS e(provider_id, at)
WHERE n.provider_id = e.provider_id
RETURNING n.provider_id
"""

# By address, case-insensitively (as log-in finds users): every email to it stops, alerts and account
# emails alike. The first reason stays; a `rejected` address stays rejected.
STOP_ADDRESSES = """
UPDATE app_user AS u SET email_status = s.status
FROM unnest($1::text[], $2::text[]) AS s(email, status)
WHERE lower(u.email) = lower(s.email) AND u.email_status = 'ok'
RETURNING u.id, u.email_status
"""


class UnknownEmail(Exception):
    """No notification has this provider id (yet)."""


def stops(event: ProviderEvent) -> str | None:
    """The email status this event gives its addresses, or None when they may still get email."""
    if event.type == COMPLAINED:
        return "complained"
    if event.type == BOUNCED and event.bounce_type.strip().lower() in HARD_BOUNCE_TYPES:
        return "bounced"
    return None


def marks_notification(event: ProviderEvent) -> bool:
    """Whether the event changes the notification it names (a soft bounce changes nothing)."""
    return event.type == DELIVERED or stops(event) is not None


def storable(event: ProviderEvent) -> bool:
    """Whether PostgreSQL can take the event (the gateway checks; this guards anything else that publishes
    here): text refuses NUL characters, a timestamp refuses NaN, and no retry would change that."""
    texts = (event.email_id, *event.to)
    return math.isfinite(event.created_at) and not any("\x00" in text for text in texts)


@dataclass(frozen=True)
class Effects:
    delivered: dict[str, float]
    bounced: dict[str, float]
    # address → status, the first event of the batch naming it wins (as the first report wins in the table).
    stopped: dict[str, str]


def effects_of(events: list[ProviderEvent]) -> Effects:
    delivered: dict[str, float] = {}
    bounced: dict[str, float] = {}
    stopped: dict[str, str] = {}
    for event in events:
        if event.type == DELIVERED:
            delivered.setdefault(event.email_id, event.created_at)
        elif (status := stops(event)) is not None:
            bounced.setdefault(event.email_id, event.created_at)
            for address in event.to:
                stopped.setdefault(address.lower(), status)
    return Effects(delivered, bounced, stopped)


class ProviderEvents:
    """Handler of the notifier's `notifier_provider` consumer."""

    def __init__(self, pool: Pool, js: JetStreamContext, topology: Topology, consumer: Consumer) -> None:
        self._pool = pool
        self.settler = Settler(js, topology, consumer)

    async def handle(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, ProviderEvent]] = []
        for msg in msgs:
            event = await self.settler.decode(msg, ProviderEvent)
            if event is None:
                continue
            if not storable(event):
                await self.settler.dead_letter(msg, "provider event PostgreSQL cannot store")
                continue
            if event.type not in (DELIVERED, BOUNCED, COMPLAINED):
                log.info("provider event ignored", type=event.type[:64], svix_id=event.svix_id)
                await self.settler.ack(msg)
                continue
            decoded.append((msg, event))
        if not decoded:
            return
        try:
            known = await self.apply([event for _, event in decoded])
        except (asyncpg.PostgresError, OSError) as exc:
            for msg, _ in decoded:
                await self.settler.fail(msg, exc, transient=True)
            return
        for msg, event in decoded:
            if event.email_id in known or not marks_notification(event):
                await self.settler.ack(msg)
            elif (msg.metadata.num_delivered or 1) < UNKNOWN_EMAIL_DELIVERIES:
                await self.settler.fail(
                    msg, UnknownEmail(f"no notification has provider id {event.email_id} yet"), transient=True
                )
            else:
                log.info(
                    "provider event for an email that is not an alert",
                    type=event.type,
                    email_id=event.email_id,
                    svix_id=event.svix_id,
                )
                await self.settler.ack(msg)

    async def apply(self, events: list[ProviderEvent]) -> set[str]:
        """Apply the events in one transaction; returns the provider ids that name a notification."""
        effects = effects_of(events)
        async with self._pool.acquire() as conn, conn.transaction():
            delivered = await conn.fetch(
                MARK_DELIVERED, list(effects.delivered), list(effects.delivered.values())
            )
            bounced = await conn.fetch(MARK_BOUNCED, list(effects.bounced), list(effects.bounced.values()))
            stopped = await conn.fetch(STOP_ADDRESSES, list(effects.stopped), list(effects.stopped.values()))
        for row in stopped:
            log.warning(
                "address stopped by the email provider; no more email to it",
                user_id=row["id"],
                email_status=row["email_status"],
            )
        soft = [event for event in events if event.type == BOUNCED and stops(event) is None]
        for event in soft:
            log.info("soft bounce; the address stays", email_id=event.email_id, bounce_type=event.bounce_type)
        log.info(
            "provider events applied",
            events=len(events),
            delivered=len(delivered),
            bounced=len(bounced),
            addresses_stopped=len(stopped),
        )
        return {row["provider_id"] for row in delivered} | {row["provider_id"] for row in bounced}

    async def close(self) -> None:
        await self._pool.close()


async def make_provider_events(ctx: ServiceContext) -> ProviderEvents:
    """Factory for `shared.service.Worker`: its own small pool (the sending path keeps its own)."""
    pool = await create_pool(ctx.settings.database_url, max_size=2)
    return ProviderEvents(pool, ctx.nc.jetstream(), ctx.topology, ctx.consumer)
