"""`python -m services.notifier`: email every eligible watcher once per change."""

from __future__ import annotations

from services.notifier.account import make_account_mailer
from services.notifier.backends import create_backend
from services.notifier.handlers import Notifier
from services.notifier.provider_events import make_provider_events
from shared.db import create_pool
from shared.health import postgres_check
from shared.service import ServiceContext, Worker, run

# Changes per fetch: with a backlog, enough emails to fill provider batches of 100 even when most sections
# have a few watchers.
BATCH_SIZE = 200
PROVIDER_BATCH_SIZE = 50
ACCOUNT_BATCH_SIZE = 20


async def make_notifier(ctx: ServiceContext) -> Notifier:
    settings = ctx.settings
    settings.require_email_backend()
    pool = await create_pool(settings.database_url, max_size=4)
    ctx.readiness.add("postgres", postgres_check(pool))
    notifier = Notifier(
        pool, create_backend(settings, pool), ctx.nc.jetstream(), ctx.topology, ctx.consumer, settings
    )
    ctx.readiness.add("email provider", notifier.provider.check())
    return notifier


def main() -> None:
    run(
        "notifier",
        Worker(lambda topology: topology.notifier, make_notifier, BATCH_SIZE),
        # What the provider reports back (delivered, bounced, complained), stored by the gateway's webhook.
        Worker(lambda topology: topology.notifier_provider, make_provider_events, PROVIDER_BATCH_SIZE),
        # Verification links, reset links and "already registered" notices the gateway asks for.
        Worker(lambda topology: topology.notifier_account, make_account_mailer, ACCOUNT_BATCH_SIZE),
    )


if __name__ == "__main__":
    main()
