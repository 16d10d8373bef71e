"""The notifier's entrypoint: a batch of changes → claims → emails, each watcher once per change."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notifier.backends import EmailBackend, PermanentSendError, TransientSendError
from services.notifier.claims import claim, mark_sent, release
from services.notifier.email import render
from services.notifier.plan import EMAILED_KINDS, Notice, chunks, idempotency_key, plan
from services.notifier.recipients import eligible_watchers
from shared.db import Pool
from shared.delivery import Settler
from shared.events import SectionChange
from shared.settings import Settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()


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
        self._settler = Settler(js, topology, consumer)
        self._lease = consumer.ack_wait / 2
        self._site_url = settings.site_url
        self._secret = settings.require_secret_key()
        self._sender = settings.email_from

    async def handle(self, msgs: list[Msg]) -> None:
        changes: list[SectionChange] = []
        readable: list[Msg] = []
        for msg in msgs:
            if (change := await self._settler.decode(msg, SectionChange)) is None:
                continue
            changes.append(change)
            readable.append(msg)
        try:
            await self.notify(changes)
        except PermanentSendError as exc:
            for msg in readable:
                await self._settler.fail(msg, exc, transient=False)
            return
        except TransientSendError as exc:
            for msg in readable:
                await self._settler.fail(msg, exc, transient=True)
            return
        for msg in readable:
            await msg.ack()

    async def notify(self, changes: list[SectionChange]) -> int:
        """Send what these changes call for and nobody has sent yet; returns the number of emails sent."""
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
        batches = chunks(mine)
        sent = 0
        for index, batch in enumerate(batches):
            try:
                await self._send(batch)
            except (TransientSendError, PermanentSendError):
                await release(self._pool, [notice.key for rest in batches[index:] for notice in rest])
                raise
            sent += len(batch)
        if notices:
            log.info(
                "notifications sent",
                changes=len(emailed),
                eligible=len(notices),
                sent=sent,
                already_claimed=len(notices) - len(mine),
            )
        return sent

    async def _send(self, notices: Sequence[Notice]) -> None:
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
        provider_ids = await self._backend.send_batch(emails, idempotency_key(emails))
        await mark_sent(
            self._pool, [(notice.key, pid) for notice, pid in zip(notices, provider_ids, strict=True)]
        )

    async def close(self) -> None:
        await self._backend.aclose()
        await self._pool.close()
