"""`python -m services.notifier`: email every eligible watcher once per change."""

from __future__ import annotations

from services.notifier.backends import create_backend
from services.notifier.handlers import Notifier
from shared.db import create_pool
from shared.health import postgres_check
from shared.service import ServiceContext, run

BATCH_SIZE = 50


async def make_notifier(ctx: ServiceContext) -> Notifier:
    settings = ctx.settings
    pool = await create_pool(settings.database_url, max_size=4)
    ctx.readiness.add("postgres", postgres_check(pool))
    return Notifier(
        pool, create_backend(settings, pool), ctx.nc.jetstream(), ctx.topology, ctx.consumer, settings
    )


def main() -> None:
    run("notifier", lambda topology: topology.notifier, make_notifier, batch_size=BATCH_SIZE)


if __name__ == "__main__":
    main()
