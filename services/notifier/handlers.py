"""The notifier's entrypoint: a batch of changes → claims → write-ahead batches → emails, each watcher once
per change.

Three kinds of trouble at the provider are kept apart, because only the first may touch a recipient:
- the provider refuses one recipient (it names it): that email is settled as refused and the address gets
  no more email;
- the provider refuses our request or configuration (API key, sender, domain): nobody is blamed; sending
  pauses, every claim stays unsent, `/readyz` says so, and everything goes out once it accepts again;
- the provider is unavailable (5xx, timeouts, rate limits): the same pause, backing off to 5 minutes.
Changes are never dead-lettered for these: the consumer redelivers without limit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import get_args

import asyncpg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notifier.backends import EmailBackend, ProviderRefused, ProviderUnavailable, Refused, Sent
from services.notifier.claims import (
    Batch,
    ClaimKey,
    Stored,
    adopt,
    assign,
    claim,
    mark_refused,
    mark_sent,
    reject_address,
    release,
    unsent,
)
from services.notifier.email import render
from services.notifier.plan import Notice, chunks, idempotency_key, plan
from services.notifier.provider import ProviderState
from services.notifier.recipients import eligible_watchers, told_about_opening
from shared.db import Pool
from shared.delivery import Settler
from shared.events import ChangeKind, SectionChange
from shared.metrics import EMAILS_FAILED, EMAILS_SENT, OPEN_TO_EMAIL_SECONDS, export_email_kinds
from shared.settings import Settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()

Heartbeat = Callable[[], Awaitable[None]]


class ClaimsPending(Exception):
    """Some emails of a change are claimed by another sender and not yet sent: retry after its lease."""


class Notifier:
    def __init__(
        self,
        pool: Pool,
        backend: EmailBackend,
        js: JetStreamContext,
        topology: Topology,
        consumer: Consumer,
        settings: Settings,
        provider: ProviderState | None = None,
    ) -> None:
        self._pool = pool
        self._backend = backend
        self.settler = Settler(js, topology, consumer)
        self.provider = provider or ProviderState()
        self._lease = consumer.ack_wait / 2
        self._site_url = settings.site_url
        self._secret = settings.require_secret_key()
        self._sender = settings.email_from
        export_email_kinds(get_args(ChangeKind))

    async def handle(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, SectionChange]] = []
        for msg in msgs:
            if (change := await self.settler.decode(msg, SectionChange)) is not None:
                decoded.append((msg, change))
        if not decoded:
            return
        if await self.provider.hold_back(self.settler, [msg for msg, _ in decoded]):
            return

        async def still_working() -> None:
            # A long run of provider calls must not outlive the ack wait: another replica would get
            # these changes while this one is still sending them.
            for msg, _ in decoded:
                await msg.in_progress()

        try:
            pending = await self.notify([change for _, change in decoded], still_working)
        except (ProviderRefused, ProviderUnavailable) as exc:
            pause = self.provider.failed(exc)
            for msg, _ in decoded:
                await self.settler.fail(msg, exc, transient=True, at_least=pause)
            return
        except (ClaimsPending, asyncpg.PostgresError, OSError) as exc:
            for msg, _ in decoded:
                await self.settler.fail(msg, exc, transient=True)
            return
        # Each change alone: one whose emails another sender still holds does not hold back the rest.
        for msg, change in decoded:
            if change.change_key in pending.get(change.kind, set()):
                await self.settler.fail(
                    msg, ClaimsPending("emails claimed by another sender are not sent yet"), transient=True
                )
            else:
                await self.settler.ack(msg)

    async def notify(self, changes: list[SectionChange], still_working: Heartbeat) -> dict[str, set[str]]:
        """Send what these changes call for and nobody has sent yet. Returns, by kind, the change keys whose
        emails are still held unsent by another sender; raises when the provider failed the request."""
        sections = {(change.state.term, change.state.class_nbr) for change in changes}
        watchers = await eligible_watchers(self._pool, sections)
        fills = [
            (watcher.recipient.watch_id, change.change_key)
            for change in changes
            if change.kind == "seat_filled"
            for watcher in watchers.get((change.state.term, change.state.class_nbr), [])
        ]
        notices = plan(changes, watchers, await told_about_opening(self._pool, fills))
        owned = await claim(self._pool, [notice.key for notice in notices], self._lease)
        by_key = {notice.key: notice for notice in notices}
        fresh = sorted(by_key[item.key] for item in owned if item.batch_key is None)
        adopted = await adopt(self._pool, {item.batch_key for item in owned if item.batch_key})
        mine = [notice.key for notice in fresh] + [item.key for batch in adopted for item in batch.items]
        done: set[ClaimKey] = set()
        try:
            for batch in adopted:
                await still_working()
                done |= await self._send(batch, by_key)
            # One batch at a time is rendered and stored, then sent: rendering all first would keep this
            # process busy (and the provider's budget idle) for as long as it takes.
            for chunk in chunks(fresh):
                await still_working()
                done |= await self._send(await self._write_ahead(chunk), by_key)
        finally:
            # Whatever this run holds and did not settle goes back, so a retry can take it: unbatched
            # claims are dropped, batched ones keep their batch for an exact repeat.
            with suppress(asyncpg.PostgresError, OSError):
                await release(self._pool, [key for key in mine if key not in done])
        held = await unsent(self._pool, [notice.key for notice in notices])
        if notices:
            log.info(
                "notifications sent",
                change_keys=sorted({change.change_key for change in changes}),
                changes=len(changes),
                eligible=len(notices),
                settled=len(done),
                claimed_elsewhere=len(held),
            )
        pending: dict[str, set[str]] = {}
        for key in held:
            pending.setdefault(key.kind, set()).add(key.change_key)
        return pending

    async def _write_ahead(self, chunk: Sequence[Notice]) -> Batch:
        """Render claimed emails and store them with their batch before the provider call."""
        stored = [
            Stored(
                notice.key,
                notice.recipient.user_id,
                render(
                    notice.change,
                    notice.recipient,
                    site_url=self._site_url,
                    secret_key=self._secret,
                    sender=self._sender,
                ),
            )
            for notice in chunk
        ]
        batch = Batch(idempotency_key([item.email for item in stored]), stored)
        if len(await assign(self._pool, [batch])) != len(stored):
            raise ClaimsPending("another sender batched some of these emails first")
        return batch

    async def _send(self, batch: Batch, by_key: dict[ClaimKey, Notice]) -> set[ClaimKey]:
        """One provider request; returns the keys it settled (sent or refused)."""
        try:
            outcomes = await self._backend.send_batch([item.email for item in batch.items], batch.key)
        except ProviderUnavailable:
            for item in batch.items:
                EMAILS_FAILED.labels(item.key.kind, "transient").inc()
            raise
        self.provider.succeeded()
        accepted = time.time()
        sent: list[tuple[ClaimKey, str]] = []
        refused: list[tuple[Stored, str]] = []
        for item, outcome in zip(batch.items, outcomes, strict=True):
            if isinstance(outcome, Sent):
                sent.append((item.key, outcome.id))
                EMAILS_SENT.labels(item.key.kind).inc()
                notice = by_key.get(item.key)
                if item.key.kind == "seat_opened" and notice is not None and notice.change.scraped_at:
                    OPEN_TO_EMAIL_SECONDS.observe(max(0.0, accepted - notice.change.scraped_at))
            elif isinstance(outcome, Refused):
                refused.append((item, outcome.reason))
        await mark_sent(self._pool, sent)
        await mark_refused(self._pool, [item.key for item, _ in refused])
        for item, reason in refused:
            await reject_address(self._pool, item.user_id)
            EMAILS_FAILED.labels(item.key.kind, "refused").inc()
            log.error(
                "address refused by the email provider; no more email to it",
                user_id=item.user_id,
                watch_id=item.key.watch_id,
                reason=reason,
            )
        return {key for key, _ in sent} | {item.key for item, _ in refused}

    async def close(self) -> None:
        await self._backend.aclose()
        await self._pool.close()
