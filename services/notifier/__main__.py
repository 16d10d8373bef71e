"""`python -m services.notifier`: email every eligible watcher once per change, send the account emails
the gateway asks for, and record what the provider reports back."""

from __future__ import annotations

import dataclasses

from services.notifier.account import AccountMailer
from services.notifier.backends import create_backend
from services.notifier.handlers import Notifier
from services.notifier.provider import BACKOFF_SECONDS, ProviderState, capped
from services.notifier.provider_events import make_provider_events
from shared.db import create_pool
from shared.health import postgres_check
from shared.service import ServiceContext, Worker, run
from shared.settings import Settings
from shared.streams import Consumer

# Changes per fetch: with a backlog, enough emails to fill provider batches of 100 even when most sections
# have a few watchers.
BATCH_SIZE = 200
PROVIDER_BATCH_SIZE = 50
ACCOUNT_BATCH_SIZE = 20


class Senders:
    """What the process's two senders (alerts, account emails) share: one view of the provider, so a
    refusal or an outage seen by one pauses both and shows once in `/readyz`."""

    def __init__(self) -> None:
        self.provider: ProviderState | None = None

    def state(self, ctx: ServiceContext) -> ProviderState:
        if self.provider is None:
            cap = ctx.settings.email_retry_max_seconds
            self.provider = ProviderState(backoff=capped(BACKOFF_SECONDS, cap))
            ctx.readiness.add("email provider", self.provider.check())
        return self.provider

    async def alerts(self, ctx: ServiceContext) -> Notifier:
        settings = ctx.settings
        settings.require_email_backend()
        pool = await create_pool(settings.database_url, max_size=4)
        ctx.readiness.add("postgres", postgres_check(pool))
        return Notifier(
            pool,
            create_backend(settings, pool),
            ctx.nc.jetstream(),
            ctx.topology,
            _capped(ctx.consumer, settings),
            settings,
            self.state(ctx),
        )

    async def accounts(self, ctx: ServiceContext) -> AccountMailer:
        settings = ctx.settings
        settings.require_email_backend()
        # Small: only the outbox backend (development) writes through it.
        pool = await create_pool(settings.database_url, max_size=2)
        return AccountMailer(
            create_backend(settings, pool),
            ctx.nc.jetstream(),
            ctx.topology,
            _capped(ctx.consumer, settings),
            settings,
            pool=pool,
            provider=self.state(ctx),
        )


def _capped(consumer: Consumer, settings: Settings) -> Consumer:
    return dataclasses.replace(
        consumer, retry_delays=capped(consumer.retry_delays, settings.email_retry_max_seconds)
    )


def main() -> None:
    senders = Senders()
    run(
        "notifier",
        Worker(lambda topology: topology.notifier, senders.alerts, BATCH_SIZE),
        # What the provider reports back (delivered, bounced, complained), stored by the gateway's webhook.
        Worker(lambda topology: topology.notifier_provider, make_provider_events, PROVIDER_BATCH_SIZE),
        # Verification links, reset links and "already registered" notices the gateway asks for.
        Worker(lambda topology: topology.notifier_account, senders.accounts, ACCOUNT_BATCH_SIZE),
    )


if __name__ == "__main__":
    main()
