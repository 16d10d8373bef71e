"""`python -m services.notifier`: email every eligible watcher once per change."""

from __future__ import annotations

from nats.aio.client import Client

from services.notifier.backends import create_backend
from services.notifier.handlers import Notifier
from shared.db import create_pool
from shared.service import run
from shared.settings import Settings
from shared.streams import Consumer, Topology

BATCH_SIZE = 50


async def make_notifier(settings: Settings, topology: Topology, consumer: Consumer, nc: Client) -> Notifier:
    pool = await create_pool(settings.database_url, max_size=4)
    return Notifier(pool, create_backend(settings, pool), nc.jetstream(), topology, consumer, settings)


def main() -> None:
    run("notifier", lambda topology: topology.notifier, make_notifier, batch_size=BATCH_SIZE)


if __name__ == "__main__":
    main()
