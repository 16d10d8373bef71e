"""The one owner of infrastructure declarations: `python -m shared.setup`.

Creates the database if missing (development), applies migrations, and declares every JetStream stream
and durable consumer. Run by `make run` before the services start and by the deployment's setup job.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from shared.db import ensure_database, migrate
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Topology, declare


async def setup(settings: Settings) -> list[str]:
    await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    nc = await connect_nats(settings.nats_url, "pmc-setup")
    try:
        topology = Topology(
            settings.namespace, settings.check_interval_seconds, settings.nats_stream_replicas
        )
        await declare(nc.jetstream(), topology)
    finally:
        await nc.close()
    return applied


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"setup: {exc}")
    log = configure_logging(settings, "setup")
    try:
        applied = asyncio.run(setup(settings))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.error("setup failed", error=str(exc) or type(exc).__name__)
        sys.exit(1)
    log.info("setup done", migrations_applied=applied, namespace=settings.namespace)


if __name__ == "__main__":
    main()
