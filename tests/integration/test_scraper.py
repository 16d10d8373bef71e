from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.js import JetStreamContext

from devtools import catalog_sim
from services.scraper.catalog import CatalogClient
from services.scraper.handlers import Scraper
from shared.events import CheckSection, DeadLetter, SectionNotFound, SectionSnapshot, encode
from shared.streams import Topology
from tests.jetstream import fetch, lose_ack, quick_redelivery, stream_events


@pytest.fixture
async def catalog() -> AsyncIterator[str]:
    async with catalog_sim.serve() as url:
        yield url


def control(api_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url.split("/catalog-microservices")[0])


async def add_section(api_url: str, class_nbr: str = "12345", enrl_tot: int = 100) -> None:
    async with control(api_url) as sim:
        response = await sim.post(
            "/_sim/sections",
            json={
                "term": "2271",
                "class_nbr": class_nbr,
                "subject": "CSE",
                "catalog_nbr": "310",
                "title": "Data Structures and Algorithms",
                "enrl_cap": 100,
                "enrl_tot": enrl_tot,
                "instructors": [],
            },
        )
        response.raise_for_status()


async def inject(api_url: str, status: int, count: int) -> None:
    async with control(api_url) as sim:
        (await sim.post("/_sim/faults", json={"status": status, "count": count})).raise_for_status()


async def request_check(js: JetStreamContext, topology: Topology, class_nbr: str = "12345") -> None:
    check = CheckSection(term="2271", class_nbr=class_nbr, window=1, requested_at=time.time())
    await js.publish(topology.check_subject, encode(check))


async def test_found_and_missing_sections_become_snapshots(
    js: JetStreamContext, topology: Topology, catalog: str
) -> None:
    await add_section(catalog, enrl_tot=97)
    async with CatalogClient(catalog) as client:
        scraper = Scraper(client, js, topology)
        await request_check(js, topology, "12345")
        await request_check(js, topology, "55555")
        await scraper.handle(await fetch(js, topology.scraper, count=2))
    found = await stream_events(
        js, topology.snapshots_stream, SectionSnapshot, topology.snapshot_found_subject
    )
    assert [(event.state.class_nbr, event.state.open_seats) for _, event in found] == [("12345", 3)]
    missing = await stream_events(
        js, topology.snapshots_stream, SectionNotFound, topology.snapshot_missing_subject
    )
    assert [event.class_nbr for _, event in missing] == ["55555"]


async def test_transient_failure_is_retried_after_a_delay_and_then_succeeds(
    js: JetStreamContext, topology: Topology, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await inject(catalog, 503, count=1)
    async with CatalogClient(catalog) as client:
        scraper = Scraper(client, js, topology, consumer)
        await request_check(js, topology)
        await scraper.handle(await fetch(js, consumer))
        assert (await js.stream_info(topology.snapshots_stream)).state.messages == 0
        [retry] = await fetch(js, consumer)
        assert retry.metadata.num_delivered == 2
        await scraper.handle([retry])
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 1


async def test_after_the_last_delivery_the_check_is_dead_lettered_with_its_error(
    js: JetStreamContext, topology: Topology, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await inject(catalog, 503, count=100)
    async with CatalogClient(catalog) as client:
        scraper = Scraper(client, js, topology, consumer)
        await request_check(js, topology)
        for delivery in range(1, consumer.max_deliver + 1):
            [msg] = await fetch(js, consumer)
            assert msg.metadata.num_delivered == delivery
            await scraper.handle([msg])
    [(subject, letter)] = await stream_events(js, topology.dead_stream, DeadLetter)
    assert subject == topology.dead_subject("scraper")
    assert letter.deliveries == consumer.max_deliver
    assert "503" in letter.error
    assert '"class_nbr":"12345"' in letter.data
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 0


async def test_a_redelivered_check_publishes_one_snapshot(
    js: JetStreamContext, topology: Topology, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    async with CatalogClient(catalog) as client:
        scraper = Scraper(client, js, topology)
        await request_check(js, topology)
        [first] = await fetch(js, consumer)
        await scraper.handle([lose_ack(first)])
        [again] = await fetch(js, consumer)
        await scraper.handle([again])
    assert again.metadata.num_delivered == 2
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 1
