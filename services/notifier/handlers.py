"""The notifier's entrypoint: a batch of changes → claims → emails, each watcher once per change."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress

import asyncpg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notifier.backends import EmailBackend, PermanentSendError, TransientSendError
from services.notifier.claims import claim, mark_sent, reject_address, release, unsent
from services.notifier.email import render
from services.notifier.plan import EMAILED_KINDS, Notice, chunks, idempotency_key, plan
from services.notifier.recipients import eligible_watchers
from shared.db import Pool
from shared.delivery import Settler
from shared.events import SectionChange
from shared.metrics import EMAILS_FAILED, EMAILS_SENT, OPEN_TO_EMAIL_SECONDS
from shared.settings import Settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()

Heartbeat = Callable[[], Awaitable[None]]


class ClaimsPending(Exception):
    """Some emails are claimed by another sender and not yet sent: retry after its lease."""


class Notifier:
    def __init__(
        self,
        pool: Pool,
        backend: EmailBackend,
        js: JetStreamContext,
        topology: Topology,
        consumer: Consumer,
        settings: Settings,
    ) -> None:
        self._pool = pool
        self._backend = backend
        self.settler = Settler(js, topology, consumer)
        self._lease = consumer.ack_wait / 2
        self._site_url = settings.site_url
        self._secret = settings.require_secret_key()
        self._sender = settings.email_from
        # Exported at 0 from the start, so that an alert on increase() sees the first failure.
        for kind in EMAILED_KINDS:
            EMAILS_SENT.labels(kind)
            for reason in ("refused", "transient"):
                EMAILS_FAILED.labels(kind, reason)

    async def handle(self, msgs: list[Msg]) -> None:
        changes: list[SectionChange] = []
        readable: list[Msg] = []
        for msg in msgs:
            if (change := await self.settler.decode(msg, SectionChange)) is None:
                continue
            changes.append(change)
            readable.append(msg)

        async def still_working() -> None:
            # A long run of provider calls must not outlive the ack wait: another replica would get
            # these changes while this one is still sending them.
            for msg in readable:
                await msg.in_progress()

        try:
            await self.notify(changes, still_working)
        except (TransientSendError, ClaimsPending, asyncpg.PostgresError, OSError) as exc:
            for msg in readable:
                await self.settler.fail(msg, exc, transient=True)
            return
        for msg in readable:
            await self.settler.ack(msg)

    async def notify(self, changes: list[SectionChange], still_working: Heartbeat) -> int:
        """Send what these changes call for and nobody has sent yet; returns the number of emails sent.

        Returns only when every email the changes call for is recorded as sent (or its address was
        refused); raises otherwise, so that the changes are retried rather than acknowledged.
        """
        for change in changes:
            if change.kind not in EMAILED_KINDS:
                log.info(
                    "section filled; watchers armed for the next opening",
                    term=change.state.term,
                    class_nbr=change.state.class_nbr,
                )
        emailed = [change for change in changes if change.kind in EMAILED_KINDS]
        watchers = await eligible_watchers(self._pool, {(c.state.term, c.state.class_nbr) for c in emailed})
        notices = plan(emailed, watchers)
        owned = await claim(self._pool, [notice.key for notice in notices], self._lease)
        mine = [notice for notice in notices if notice.key in owned]
        sent = 0
        try:
            for batch in chunks(mine):
                await still_working()
                sent += await self._send(batch)
        finally:
            # Whatever this run claimed and did not record as sent goes back, so a retry can claim it;
            # should this fail too, the claims expire after the lease.
            with suppress(asyncpg.PostgresError, OSError):
                await release(self._pool, [notice.key for notice in mine])
        pending = await unsent(self._pool, [notice.key for notice in notices])
        if notices:
            log.info(
                "notifications sent",
                change_keys=sorted({change.change_key for change in emailed}),
                changes=len(emailed),
                eligible=len(notices),
                sent=sent,
                claimed_elsewhere=len(pending),
            )
        if pending:
            raise ClaimsPending(f"{len(pending)} emails are claimed by another sender and not sent yet")
        return sent

    async def _send(self, notices: Sequence[Notice]) -> int:
        """Send one provider batch; when the provider refuses it, send its emails one by one, so that one
        refused address costs only its own email. Returns how many were sent."""
        try:
            await self._send_batch(notices)
            return len(notices)
        except PermanentSendError as exc:
            if len(notices) == 1:
                await self._refused(notices[0], exc)
                return 0
        sent = 0
        for notice in notices:
            try:
                await self._send_batch([notice])
                sent += 1
            except PermanentSendError as exc:
                await self._refused(notice, exc)
        return sent

    async def _send_batch(self, notices: Sequence[Notice]) -> None:
        emails = [
            render(
                notice.change,
                notice.recipient,
                site_url=self._site_url,
                secret_key=self._secret,
                sender=self._sender,
            )
            for notice in notices
        ]
        try:
            provider_ids = await self._backend.send_batch(emails, idempotency_key(emails))
        except TransientSendError:
            for notice in notices:
                EMAILS_FAILED.labels(notice.change.kind, "transient").inc()
            raise
        accepted = time.time()
        for notice in notices:
            EMAILS_SENT.labels(notice.change.kind).inc()
            if notice.change.kind == "seat_opened" and notice.change.scraped_at:
                OPEN_TO_EMAIL_SECONDS.observe(max(0.0, accepted - notice.change.scraped_at))
        await mark_sent(
            self._pool, [(notice.key, pid) for notice, pid in zip(notices, provider_ids, strict=True)]
        )

    async def _refused(self, notice: Notice, error: PermanentSendError) -> None:
        await reject_address(self._pool, notice.recipient.user_id)
        EMAILS_FAILED.labels(notice.change.kind, "refused").inc()
        log.error(
            "address refused by the email provider; no more email to it",
            user_id=notice.recipient.user_id,
            watch_id=notice.recipient.watch_id,
            error=str(error),
        )

    async def close(self) -> None:
        await self._backend.aclose()
        await self._pool.close()
