"""`python -m services.scraper`: look sections up in the class search, publish what it says."""

from __future__ import annotations

from services.scraper.catalog import CatalogClient
from services.scraper.handlers import Scraper
from shared.service import ServiceContext, Worker, run

# Checks fetched per pull and looked up concurrently: bounded so one replica is polite to the catalog.
CONCURRENCY = 16


async def make_scraper(ctx: ServiceContext) -> Scraper:
    catalog = CatalogClient(ctx.settings.asu_api_url, max_connections=CONCURRENCY)
    return Scraper(catalog, ctx.nc.jetstream(), ctx.topology, ctx.consumer)


def main() -> None:
    run("scraper", Worker(lambda topology: topology.scraper, make_scraper, CONCURRENCY))


if __name__ == "__main__":
    main()
