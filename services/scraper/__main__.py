"""`python -m services.scraper`: look courses and sections up in the class search, publish what it says."""

from __future__ import annotations

from services.scraper.browser import BrowserSource
from services.scraper.catalog import CatalogClient
from services.scraper.guard import SourceGuard
from services.scraper.handlers import Scraper
from services.scraper.mode import ModeStore
from services.scraper.source import ClassSearch
from shared.service import ServiceContext, Worker, run

# Checks fetched per pull and looked up concurrently; the fleet's pace is ASU_REQUESTS_PER_MINUTE.
CONCURRENCY = 16


async def make_scraper(ctx: ServiceContext) -> Scraper:
    settings = ctx.settings
    guard = SourceGuard(
        settings.redis_url,
        settings.namespace,
        requests_per_minute=settings.asu_requests_per_minute,
        breaker_failures=settings.asu_breaker_failures,
        breaker_cooldown=settings.asu_breaker_cooldown_seconds,
        breaker_successes=settings.asu_breaker_successes,
    )
    search = ClassSearch(
        CatalogClient(settings.asu_api_url, max_connections=CONCURRENCY),
        BrowserSource(
            settings.asu_catalog_url,
            contexts=settings.scraper_browser_contexts,
            chromium_path=settings.chromium_path,
        ),
        guard,
        ModeStore(settings.redis_url, settings.namespace, api_retry_seconds=settings.asu_api_retry_seconds),
        stop=ctx.stop,
    )
    ctx.readiness.add("class search", guard.readiness_check())
    return Scraper(
        search, ctx.nc.jetstream(), ctx.topology, ctx.consumer, probes=settings.asu_breaker_successes
    )


def main() -> None:
    run("scraper", Worker(lambda topology: topology.scraper, make_scraper, CONCURRENCY))


if __name__ == "__main__":
    main()
