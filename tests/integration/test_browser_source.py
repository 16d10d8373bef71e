"""The browser path to the class search: real Chromium (/usr/bin/chromium) reading the simulator's page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright
from prometheus_client import REGISTRY

from devtools import catalog_sim
from services.scraper.browser import CHROMIUM_ARGS, BrowserSource, BrowserUnavailable, PageFailed, page_url
from services.scraper.parser import find_section
from tests.e2e.system import eventually

CHROMIUM = "/usr/bin/chromium"
TERM = "2267"
FLAGS = {"campusOrOnlineSelection": "A", "honors": "F", "promod": "F", "searchType": "all"}
COURSE_QUERY = {"term": TERM, "subject": "CSE", "catalogNbr": "310", **FLAGS}


def require_chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium missing: apt-get install -y chromium", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
async def site_root() -> AsyncIterator[str]:
    async with catalog_sim.serve() as api_url:
        yield api_url.removesuffix(catalog_sim.API_PREFIX)


@pytest.fixture
async def sim(site_root: str) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's control API, with CSE 310 (two sections) and CSE 412 in Fall 2026 and an open door."""
    async with httpx.AsyncClient(base_url=site_root) as client:
        (await client.post("/_sim/reset")).raise_for_status()
        (await client.post("/_sim/door", json={})).raise_for_status()
        for class_nbr, catalog_nbr in (("66445", "310"), ("66446", "310"), ("70001", "412")):
            (await client.post("/_sim/sections", json=section(class_nbr, catalog_nbr))).raise_for_status()
        yield client
        # A new door plan lets session calls still held by a delay go, so the simulator can stop.
        (await client.post("/_sim/door", json={})).raise_for_status()


@pytest.fixture(scope="module")
async def browser(site_root: str) -> AsyncIterator[BrowserSource]:
    source = BrowserSource(site_root, contexts=2, chromium_path=require_chromium(), timeout=10.0)
    yield source
    await source.aclose()


def section(class_nbr: str, catalog_nbr: str) -> dict[str, Any]:
    return {
        "term": TERM,
        "class_nbr": class_nbr,
        "subject": "CSE",
        "catalog_nbr": catalog_nbr,
        "title": "Data Structures and Algorithms" if catalog_nbr == "310" else "Database Management",
        "enrl_cap": 150,
        "enrl_tot": 148,
        "instructors": ["Ana Whitfield"],
        "days": "M W",
        "start_time": "4:30 PM",
        "end_time": "5:45 PM",
    }


async def close_door(sim: httpx.AsyncClient, session_delay_ms: int = 0) -> None:
    plan = {"anonymous": False, "session_delay_ms": session_delay_ms}
    (await sim.post("/_sim/door", json=plan)).raise_for_status()


async def door(sim: httpx.AsyncClient) -> dict[str, Any]:
    response = await sim.get("/_sim/door")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def class_nbrs(body: bytes) -> list[str]:
    return [item["CLAS"]["CLASSNBR"] for item in json.loads(body)["classes"]]


def pages(outcome: str) -> float:
    return REGISTRY.get_sample_value("pmc_browser_pages_total", {"outcome": outcome}) or 0.0


def chromium_processes() -> set[int]:
    """Chromium processes descending from this test process (through Playwright's driver)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        head, _, rest = stat.rpartition(")")
        parents[int(entry.name)] = int(rest.split()[1])
        names[int(entry.name)] = head.partition("(")[2]
    ours = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in ours} - ours
        grew = bool(found)
        ours |= found
    return {pid for pid in ours if "chrom" in names.get(pid, "")}


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still in the process table, zombies included."""
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def test_page_url_is_the_public_class_list() -> None:
    url = page_url("https://catalog.apps.asu.edu/", {"term": TERM, "keywords": "66445", **FLAGS})
    assert url == (
        "https://catalog.apps.asu.edu/catalog/classes/classlist?term=2267&keywords=66445"
        "&campusOrOnlineSelection=A&honors=F&promod=F&searchType=all"
    )


async def test_with_the_door_closed_only_the_page_gets_the_class_search(
    sim: httpx.AsyncClient, browser: BrowserSource
) -> None:
    await close_door(sim)
    api = f"{catalog_sim.API_PREFIX}/search/classes"
    for authorization in ("Bearer null", "Bearer made-up"):
        refused = await sim.get(api, params=COURSE_QUERY, headers={"Authorization": authorization})
        assert refused.status_code == 401
    ok_before = pages("ok")

    body = await browser.search(COURSE_QUERY)

    assert sorted(class_nbrs(body)) == ["66445", "66446"]
    state = find_section(body, TERM, "66445")
    assert state is not None
    assert state.open_seats == 2
    stats = await door(sim)
    assert (stats["page_loads"], stats["tokens_issued"]) == (1, 1)
    assert pages("ok") == ok_before + 1


async def test_with_the_door_open_the_page_reads_one_section_anonymously(
    sim: httpx.AsyncClient, browser: BrowserSource
) -> None:
    body = await browser.search({"term": TERM, "keywords": "70001", **FLAGS})

    assert class_nbrs(body) == ["70001"]
    stats = await door(sim)
    assert (stats["page_loads"], stats["sessions"], stats["tokens_issued"]) == (1, 1, 0)


async def test_images_fonts_and_stylesheets_are_blocked(
    sim: httpx.AsyncClient, browser: BrowserSource, site_root: str
) -> None:
    await browser.search(COURSE_QUERY)
    assert (await door(sim))["assets"] == {}

    # The same page in a browser without blocking fetches all three kinds, and renders rows as ASU's does.
    driver = await async_playwright().start()
    try:
        plain = await driver.chromium.launch(executable_path=require_chromium(), args=list(CHROMIUM_ARGS))
        page = await plain.new_page()
        await page.goto(page_url(site_root, COURSE_QUERY), wait_until="load")
        numbers = page.locator(".class-results-rows .class-accordion .class-results-cell.number")
        await numbers.first.wait_for()
        assert await numbers.all_inner_texts() == ["66445", "66446"]
        await plain.close()
    finally:
        await driver.stop()
    assert (await door(sim))["assets"] == {"sim.css": 1, "logo.png": 1, "sim.woff2": 1}


async def test_no_more_pages_open_at_once_than_contexts(
    sim: httpx.AsyncClient, browser: BrowserSource
) -> None:
    # Each page holds its session call 300 ms: with 5 searches and no bound, 5 would wait together.
    await close_door(sim, session_delay_ms=300)

    bodies = await asyncio.gather(*(browser.search(COURSE_QUERY) for _ in range(5)))

    assert all(sorted(class_nbrs(body)) == ["66445", "66446"] for body in bodies)
    stats = await door(sim)
    assert (stats["sessions"], stats["sessions_max_in_flight"]) == (5, 2)


async def test_a_refused_class_search_fails_the_page_naming_the_status(
    sim: httpx.AsyncClient, browser: BrowserSource
) -> None:
    (await sim.post("/_sim/faults", json={"status": 503, "count": 1})).raise_for_status()
    failed_before = pages("failed")

    with pytest.raises(PageFailed, match="503"):
        await browser.search(COURSE_QUERY)

    assert pages("failed") == failed_before + 1


async def test_a_crashed_browser_is_relaunched_on_next_use(
    sim: httpx.AsyncClient, browser: BrowserSource
) -> None:
    await browser.search(COURSE_QUERY)
    before = chromium_processes()
    assert before
    for pid in before:
        # Killing the browser's main process can take its children with it before they are reached.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def disconnected() -> bool:
        return not browser.running

    await eventually(disconnected, "the source sees its Chromium gone", within=5)
    body = await browser.search(COURSE_QUERY)

    assert sorted(class_nbrs(body)) == ["66445", "66446"]
    assert browser.running
    assert chromium_processes() - before


async def test_a_missing_chromium_is_unavailable_with_a_clear_message(site_root: str) -> None:
    source = BrowserSource(site_root, chromium_path="/nonexistent/chromium")
    unavailable_before = pages("unavailable")

    with pytest.raises(BrowserUnavailable) as raised:
        await source.search(COURSE_QUERY)

    message = str(raised.value)
    assert "/nonexistent/chromium" in message
    assert "CHROMIUM_PATH" in message
    assert "\n" not in message
    assert pages("unavailable") == unavailable_before + 1
    await source.aclose()


async def test_aclose_ends_a_search_in_flight_and_leaves_no_chromium(
    sim: httpx.AsyncClient, browser: BrowserSource, site_root: str
) -> None:
    await browser.search(COURSE_QUERY)  # the module's own Chromium is up before counting processes
    others = chromium_processes()
    await close_door(sim, session_delay_ms=60_000)
    source = BrowserSource(site_root, chromium_path=require_chromium(), timeout=30.0)
    search = asyncio.create_task(source.search(COURSE_QUERY))

    async def page_waiting() -> bool:
        return bool((await door(sim))["sessions_in_flight"])

    await eventually(page_waiting, "the page is waiting for its session", within=5)
    mine = chromium_processes() - others
    assert mine

    async with asyncio.timeout(5):
        await source.aclose()
        with pytest.raises(PageFailed):
            await search

    async def exited() -> bool:
        return not alive(mine)

    await eventually(exited, "the closed source's Chromium processes exit", within=5)
    async with asyncio.timeout(0.1):
        await source.aclose()
    with pytest.raises(BrowserUnavailable, match="closed"):
        await source.search(COURSE_QUERY)
