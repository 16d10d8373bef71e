"""The scraper's handler on real NATS and Redis against the catalog simulator over real HTTP: checks by
class number and by course, stale windows, the shared breaker and 429 pause, the browser fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from devtools import catalog_sim
from devtools.prepare_tests import chromium
from services.scraper.browser import BrowserSource
from services.scraper.catalog import CatalogClient
from services.scraper.guard import BreakerState, SourceGuard
from services.scraper.handlers import Scraper
from services.scraper.mode import Mode, ModeStore
from services.scraper.source import ClassSearch
from shared.events import CheckCourse, CheckSection, DeadLetter, SectionNotFound, SectionSnapshot, encode
from shared.settings import Settings
from shared.streams import Consumer, Topology
from tests.e2e.system import eventually
from tests.jetstream import fetch, lose_ack, quick_redelivery, stream_events

TERM = "2271"


@pytest.fixture
async def catalog() -> AsyncIterator[str]:
    async with catalog_sim.serve() as url:
        yield url


def site_root(api_url: str) -> str:
    return api_url.split(catalog_sim.API_PREFIX)[0]


def control(api_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=site_root(api_url))


def chromium_path() -> Path:
    found = chromium()
    assert found is not None, "Chromium missing: apt-get install -y chromium (or set CHROMIUM_PATH)"
    return found


@asynccontextmanager
async def class_search(
    settings: Settings,
    api_url: str,
    *,
    failures: int = 10,
    cooldown: float = 120.0,
    successes: int = 3,
    api_retry_seconds: float = 600.0,
    per_minute: int = 600,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[ClassSearch]:
    search = ClassSearch(
        CatalogClient(api_url, timeout=5.0),
        BrowserSource(site_root(api_url), contexts=2, chromium_path=str(chromium_path())),
        SourceGuard(
            settings.redis_url,
            settings.namespace,
            requests_per_minute=per_minute,
            breaker_failures=failures,
            breaker_cooldown=cooldown,
            breaker_successes=successes,
        ),
        ModeStore(settings.redis_url, settings.namespace, api_retry_seconds=api_retry_seconds),
        stop=stop,
    )
    try:
        yield search
    finally:
        await search.aclose()


async def add_section(
    api_url: str,
    class_nbr: str = "12345",
    enrl_tot: int = 100,
    *,
    subject: str = "CSE",
    catalog_nbr: str = "310",
) -> None:
    async with control(api_url) as sim:
        response = await sim.post(
            "/_sim/sections",
            json={
                "term": TERM,
                "class_nbr": class_nbr,
                "subject": subject,
                "catalog_nbr": catalog_nbr,
                "title": "Data Structures and Algorithms",
                "enrl_cap": 100,
                "enrl_tot": enrl_tot,
                "instructors": [],
            },
        )
        response.raise_for_status()


async def inject(api_url: str, status: int, count: int, **extra: Any) -> None:
    async with control(api_url) as sim:
        (await sim.post("/_sim/faults", json={"status": status, "count": count, **extra})).raise_for_status()


async def searches(api_url: str) -> int:
    async with control(api_url) as sim:
        count: int = (await sim.get("/_sim/stats")).raise_for_status().json()["searches"]
        return count


def current_window(topology: Topology) -> int:
    return topology.window_of(time.time())


def open_window(topology: Topology) -> int:
    """A window that cannot pass during a test (the current one may end a moment after it is published)."""
    return current_window(topology) + 1


async def request_check(
    js: JetStreamContext,
    topology: Topology,
    class_nbr: str = "12345",
    *,
    window: int | None = None,
    requested_at: float | None = None,
) -> None:
    check = CheckSection(
        term=TERM,
        class_nbr=class_nbr,
        window=open_window(topology) if window is None else window,
        requested_at=time.time() if requested_at is None else requested_at,
    )
    await js.publish(topology.check_subject, encode(check))


async def request_course(
    js: JetStreamContext, topology: Topology, class_nbrs: tuple[str, ...], catalog_nbr: str = "310"
) -> None:
    check = CheckCourse(
        term=TERM,
        subject="CSE",
        catalog_nbr=catalog_nbr,
        class_nbrs=class_nbrs,
        window=open_window(topology),
        requested_at=time.time(),
    )
    await js.publish(topology.check_course_subject, encode(check))


async def snapshots(js: JetStreamContext, topology: Topology) -> list[tuple[str, int]]:
    found = await stream_events(
        js, topology.snapshots_stream, SectionSnapshot, topology.snapshot_found_subject
    )
    return sorted((event.state.class_nbr, event.state.open_seats) for _, event in found)


async def misses(js: JetStreamContext, topology: Topology) -> list[str]:
    missing = await stream_events(
        js, topology.snapshots_stream, SectionNotFound, topology.snapshot_missing_subject
    )
    return sorted(event.class_nbr for _, event in missing)


async def test_found_and_missing_sections_become_snapshots(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog, enrl_tot=97)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        await request_check(js, topology, "12345")
        await request_check(js, topology, "55555")
        await scraper.handle(await fetch(js, topology.scraper, count=2))
    assert await snapshots(js, topology) == [("12345", 3)]
    assert await misses(js, topology) == ["55555"]


async def test_one_search_reports_every_section_of_a_course(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog, "10001", enrl_tot=100)
    await add_section(catalog, "10002", enrl_tot=98)
    # Not watched, still reported: later features watch whole courses and spot new sections.
    await add_section(catalog, "10003", enrl_tot=50)
    # Another course the fuzzy search may bring along.
    await add_section(catalog, "10004", catalog_nbr="310L")
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        await request_course(js, topology, ("10001", "10002", "10009"))
        await scraper.handle(await fetch(js, topology.scraper))
    assert await snapshots(js, topology) == [("10001", 0), ("10002", 2), ("10003", 50)]
    # A watched section the course no longer lists is missing; the others are not.
    assert await misses(js, topology) == ["10009"]
    assert await searches(catalog) == 1


async def test_a_course_the_search_does_not_list_at_all_retires_nobody(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        await request_course(js, topology, ("10001", "10002"), catalog_nbr="999")
        [msg] = await fetch(js, topology.scraper)
        await scraper.handle([msg])
    # A whole course missing is a source fault, not a fact: nothing is reported, the check is settled.
    assert await snapshots(js, topology) == []
    assert await misses(js, topology) == []
    info = await js.consumer_info(topology.scraper.stream, topology.scraper.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_scraper_a_little_behind_still_checks_what_it_fetches(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        # Its window just ended, but it was asked for seconds ago: short windows must not starve the scraper.
        await request_check(js, topology, window=current_window(topology) - 1, requested_at=time.time() - 5)
        await scraper.handle(await fetch(js, topology.scraper))
    assert await snapshots(js, topology) == [("12345", 0)]


async def test_a_check_whose_window_passed_is_acknowledged_without_a_request(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        # Published at the start of the window before, and a few minutes old now.
        await request_check(
            js,
            topology,
            window=current_window(topology) - 1,
            requested_at=time.time() - 3 * topology.check_interval_seconds,
        )
        await scraper.handle(await fetch(js, topology.scraper))
    assert await searches(catalog) == 0
    assert await snapshots(js, topology) == []
    info = await js.consumer_info(topology.scraper.stream, topology.scraper.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_transient_failure_is_retried_after_a_delay_and_then_succeeds(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await inject(catalog, 503, count=1)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology, consumer)
        await request_check(js, topology)
        await scraper.handle(await fetch(js, consumer))
        assert (await js.stream_info(topology.snapshots_stream)).state.messages == 0
        [retry] = await fetch(js, consumer)
        assert retry.metadata.num_delivered == 2
        await scraper.handle([retry])
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 1


async def test_after_the_last_delivery_the_check_is_dead_lettered_with_its_error(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await inject(catalog, 503, count=100)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology, consumer)
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
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        await request_check(js, topology)
        [first] = await fetch(js, consumer)
        await scraper.handle([lose_ack(first)])
        [again] = await fetch(js, consumer)
        await scraper.handle([again])
    assert again.metadata.num_delivered == 2
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 1


async def test_a_redelivered_course_check_publishes_each_snapshot_once(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog, "10001")
    await add_section(catalog, "10002")
    async with class_search(settings, catalog) as search:
        scraper = Scraper(search, js, topology)
        await request_course(js, topology, ("10001", "10003"))
        [first] = await fetch(js, consumer)
        await scraper.handle([lose_ack(first)])
        [again] = await fetch(js, consumer)
        await scraper.handle([again])
    assert again.metadata.num_delivered == 2
    # Two sections found and one missing, each stored once although the check ran twice.
    assert (await js.stream_info(topology.snapshots_stream)).state.messages == 3


async def pending(js: JetStreamContext, consumer: Consumer) -> tuple[int, int]:
    info = await js.consumer_info(consumer.stream, consumer.durable)
    return info.num_pending or 0, info.num_ack_pending or 0


async def test_an_open_breaker_sends_nothing_and_dead_letters_nothing_until_probes_close_it(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await add_section(catalog, "12346")
    await inject(catalog, 503, count=2)
    stop = asyncio.Event()
    async with class_search(settings, catalog, failures=2, cooldown=1.0, successes=1) as search:
        scraper = Scraper(search, js, topology, consumer, probes=1)
        await request_check(js, topology)
        for _ in range(2):
            await scraper.handle(await fetch(js, consumer))
        assert (await search.guard.view()).state is BreakerState.OPEN
        # While open: the loop fetches nothing (the check waits in the stream, its deliveries unspent) and
        # a check already in hand is handed back without a request.
        await request_check(js, topology, "12346")
        before = await searches(catalog)
        assert await scraper.admit(16, stop) == 0
        assert await searches(catalog) == before
        # The cool-down passes: half open, one probe at a time.
        admitted = 0
        while admitted == 0:
            admitted = await scraper.admit(16, stop)
        assert admitted == 1
        assert (await search.guard.view()).state is BreakerState.HALF_OPEN
        await scraper.handle(await fetch(js, consumer))
        assert (await search.guard.view()).state is BreakerState.CLOSED
        assert await scraper.admit(16, stop) == 16
        await scraper.handle(await fetch(js, consumer))
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0
    assert sorted(class_nbr for class_nbr, _ in await snapshots(js, topology)) == ["12345", "12346"]
    assert await pending(js, consumer) == (0, 0)


async def test_a_429_pauses_every_scraper_for_its_retry_after(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog)
    await inject(catalog, 429, count=1, retry_after=2)
    async with class_search(settings, catalog) as search, class_search(settings, catalog) as other:
        scraper = Scraper(search, js, topology, consumer)
        await request_check(js, topology)
        [msg] = await fetch(js, consumer)
        await scraper.handle([msg])
        # Handed back for after the pause, not failed; and the other replica is paused too.
        assert await snapshots(js, topology) == []
        admission = await other.guard.admit()
        assert not admission.allowed
        assert 0 < admission.wait <= 2
        [again] = await fetch(js, consumer)
        assert again.metadata.num_delivered == 2
        await scraper.handle([again])
    assert await snapshots(js, topology) == [("12345", 0)]
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0
    assert await searches(catalog) == 2


async def test_when_the_api_shuts_us_out_the_class_list_page_answers_in_chromium(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog, "10001", enrl_tot=90)
    await add_section(catalog, "10002")
    async with control(catalog) as sim:
        (await sim.post("/_sim/door", json={"anonymous": False})).raise_for_status()
    async with class_search(settings, catalog, api_retry_seconds=600) as search:
        scraper = Scraper(search, js, topology)
        await request_course(js, topology, ("10001", "10002"))
        await scraper.handle(await fetch(js, topology.scraper))
        assert await snapshots(js, topology) == [("10001", 10), ("10002", 0)]
        # The switch is the fleet's: another replica goes straight to the page.
        other_mode = ModeStore(settings.redis_url, settings.namespace, api_retry_seconds=600)
        try:
            assert await other_mode.current() is Mode.BROWSER
        finally:
            await other_mode.aclose()
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0


def browser_pages() -> float:
    return REGISTRY.get_sample_value("pmc_browser_pages_total", {"outcome": "ok"}) or 0.0


async def test_the_api_is_preferred_again_once_it_answers(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    await add_section(catalog, "10001", enrl_tot=90)
    async with control(catalog) as sim:
        (await sim.post("/_sim/door", json={"anonymous": False})).raise_for_status()
    async with class_search(settings, catalog, api_retry_seconds=1) as search:
        scraper = Scraper(search, js, topology)
        await request_check(js, topology, "10001")
        await scraper.handle(await fetch(js, topology.scraper))
        async with control(catalog) as sim:
            (await sim.post("/_sim/door", json={"anonymous": True})).raise_for_status()
        mode = ModeStore(settings.redis_url, settings.namespace, api_retry_seconds=1)
        try:

            async def api_again() -> bool:
                return await mode.current() is Mode.API

            # The switch expires in Redis after ASU_API_RETRY_SECONDS: nothing to await but the clock.
            await eventually(api_again, "the API to be tried again", within=5)
        finally:
            await mode.aclose()
        pages = browser_pages()
        await request_check(js, topology, "10001")
        await scraper.handle(await fetch(js, topology.scraper))
        # The API answered: no page was loaded this time.
        assert browser_pages() == pages
    assert [nbr for nbr, _ in await snapshots(js, topology)] == ["10001", "10001"]


async def test_a_stopping_scraper_hands_back_checks_waiting_for_the_budget(
    js: JetStreamContext, topology: Topology, settings: Settings, catalog: str
) -> None:
    consumer = await quick_redelivery(js, topology, topology.scraper)
    await add_section(catalog, "10001")
    await add_section(catalog, "10002")
    stop = asyncio.Event()
    async with class_search(settings, catalog, per_minute=1, stop=stop) as search:
        scraper = Scraper(search, js, topology, consumer)
        await request_check(js, topology, "10001")
        await request_check(js, topology, "10002")
        first, second = await fetch(js, consumer, count=2)
        await scraper.handle([first])
        # The budget is spent for a minute: the second check waits, until the scraper is told to stop.
        waiting = asyncio.create_task(scraper.handle([second]))
        stop.set()
        await asyncio.wait_for(waiting, 5)
        [again] = await fetch(js, consumer)
    assert again.metadata.num_delivered == 2
    assert await searches(catalog) == 1
    assert await snapshots(js, topology) == [("10001", 0)]
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0
