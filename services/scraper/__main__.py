"""`python -m services.scraper`: look sections up in the class search, publish what it says."""

from __future__ import annotations

from nats.aio.client import Client

from services.scraper.catalog import CatalogClient
from services.scraper.handlers import Scraper
from shared.service import run
from shared.settings import Settings
from shared.streams import Consumer, Topology

# Checks fetched per pull and looked up concurrently: bounded so one replica is polite to the catalog.
CONCURRENCY = 16


async def make_scraper(settings: Settings, topology: Topology, consumer: Consumer, nc: Client) -> Scraper:
    catalog = CatalogClient(settings.asu_api_url, max_connections=CONCURRENCY)
    return Scraper(catalog, nc.jetstream(), topology, consumer)


def main() -> None:
    run("scraper", lambda topology: topology.scraper, make_scraper, batch_size=CONCURRENCY)


if __name__ == "__main__":
    main()
