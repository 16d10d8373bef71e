"""`python -m services.scheduler`: publish check events every CHECK_INTERVAL_SECONDS until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
from nats.errors import Error as NatsError

from services.scheduler.app import Scheduler
from shared.db import create_pool
from shared.failures import explain
from shared.health import HealthServer, Readiness, nats_check, postgres_check, stream_check
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Topology


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pool = await create_pool(settings.database_url, max_size=3)
    nc = await connect_nats(settings.nats_url, "pmc-scheduler")
    try:
        topology = Topology(settings.namespace, settings.check_interval_seconds)
        readiness = Readiness()
        readiness.add("nats", nats_check(nc))
        readiness.add("postgres", postgres_check(pool))
        readiness.add("stream", stream_check(nc, topology.checks_stream))
        health = HealthServer(readiness, settings.health_port)
        health.start()
        scheduler = Scheduler(pool, nc.jetstream(), topology)
        freshness = asyncio.create_task(scheduler.watch_freshness(stop))
        try:
            await scheduler.run_forever(stop)
        finally:
            await freshness
            await health.stop()
    finally:
        await nc.drain()
        await pool.close()


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"scheduler: {exc}")
    log = configure_logging(settings, "scheduler")
    log.info("service started", interval=settings.check_interval_seconds, health_port=settings.health_port)
    try:
        asyncio.run(serve(settings))
    except (OSError, asyncpg.PostgresError, NatsError) as exc:
        log.error("cannot start", error=explain(exc, database_url=settings.database_url))
        sys.exit(1)
    log.info("service stopped")


if __name__ == "__main__":
    main()
