"""Account emails (verification links, password reset links, "someone tried to register with your
address"): one `AccountEmail` from the gateway, one email, sent once.

Each email is its own provider request under an idempotency key naming what is sent
(`account-<kind>-<user id>-<nonce, or when it was asked for>`), and is rendered only from the event, so a
redelivery after a crash (sent, not acknowledged) repeats the same request and the provider recognises it;
the development outbox stores it once under the same id. Batching several account emails under one key
would not survive that: a redelivery may group them differently.

The provider's trouble is handled as on the alert path: an outage or a refusal of our configuration
retries the message later (without limit: the consumer redelivers forever, backing off to 5 minutes) and
pauses this worker's sending; a refused recipient is acknowledged and logged, since no retry can help.
A link that expired while the provider was down is not sent at all: it would open only an "expired" page.
"""

from __future__ import annotations

import time
from typing import get_args

import asyncpg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notifier.backends import (
    EmailBackend,
    ProviderRefused,
    ProviderUnavailable,
    Refused,
    Sent,
)
from services.notifier.email import render_account
from services.notifier.provider import ProviderState
from shared.db import Pool
from shared.delivery import Settler
from shared.events import AccountEmail, AccountEmailKind
from shared.metrics import EMAILS_FAILED, EMAILS_SENT, export_email_kinds
from shared.settings import Settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()


class AccountMailer:
    def __init__(
        self,
        backend: EmailBackend,
        js: JetStreamContext,
        topology: Topology,
        consumer: Consumer,
        settings: Settings,
        *,
        pool: Pool | None = None,
        provider: ProviderState | None = None,
    ) -> None:
        self._backend = backend
        self.settler = Settler(js, topology, consumer)
        self.provider = provider or ProviderState()
        # The outbox backend writes through this pool; it is closed with the worker.
        self._pool = pool
        # Renew the ack deadline of the messages still waiting this often while sending a batch.
        self._heartbeat = consumer.ack_wait / 3
        self._site_url = settings.site_url
        self._secret = settings.require_secret_key()
        self._sender = settings.email_from
        export_email_kinds(get_args(AccountEmailKind))

    async def handle(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, AccountEmail]] = []
        for msg in msgs:
            if (event := await self.settler.decode(msg, AccountEmail)) is not None:
                decoded.append((msg, event))
        beat = time.monotonic()
        for index, (msg, event) in enumerate(decoded):
            if await self.provider.hold_back(self.settler, [waiting for waiting, _ in decoded[index:]]):
                return
            if time.monotonic() - beat > self._heartbeat:
                # A slow provider must not let the ack wait of the messages still in hand run out: another
                # replica would send them meanwhile (harmless under the same key, but wasted requests).
                for waiting, _ in decoded[index:]:
                    await waiting.in_progress()
                beat = time.monotonic()
            await self._send(msg, event)

    async def _send(self, msg: Msg, event: AccountEmail) -> None:
        if event.expires_at and event.expires_at <= time.time():
            log.warning(
                "account email not sent: its link has expired", kind=event.kind, user_id=event.user_id
            )
            await self.settler.ack(msg)
            return
        email = render_account(event, site_url=self._site_url, secret_key=self._secret, sender=self._sender)
        try:
            [outcome] = await self._backend.send_batch([email], email.idempotency_id)
        except (ProviderRefused, ProviderUnavailable) as exc:
            EMAILS_FAILED.labels(event.kind, "transient").inc()
            pause = self.provider.failed(exc)
            await self.settler.fail(msg, exc, transient=True, at_least=pause)
            return
        except (asyncpg.PostgresError, OSError) as exc:
            # The outbox backend's database, or a connection that broke: try again later.
            await self.settler.fail(msg, exc, transient=True)
            return
        self.provider.succeeded()
        if isinstance(outcome, Sent):
            EMAILS_SENT.labels(event.kind).inc()
            log.info("account email sent", kind=event.kind, user_id=event.user_id, provider_id=outcome.id)
        elif isinstance(outcome, Refused):
            EMAILS_FAILED.labels(event.kind, "refused").inc()
            # Nothing more can be done for this address; the student sees no email and can try another.
            log.error(
                "account email refused by the provider",
                kind=event.kind,
                user_id=event.user_id,
                reason=outcome.reason,
            )
        await self.settler.ack(msg)

    async def close(self) -> None:
        await self._backend.aclose()
        if self._pool is not None:
            await self._pool.close()
