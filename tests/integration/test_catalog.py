"""CatalogClient and the parser against the catalog simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devtools.catalog_sim import API_PREFIX, SimSection, clas_row, serve
from devtools.catalog_sim.demo import SPOTLIGHT_PERIOD, demo_sections, drift, spotlight
from devtools.catalog_sim.sections import check_section
from devtools.catalog_sim.state import MAX_SCROLLS, SimCatalog
from services.scraper.catalog import CatalogClient, PermanentCatalogError, TransientCatalogError, course_query
from services.scraper.parser import find_section, read_course_page
from tests.infra import ASU_CAPTURE

TERM = "2271"


@pytest.fixture(scope="module")
async def sim_url() -> AsyncIterator[str]:
    async with serve() as url:
        yield url


@pytest.fixture
async def control(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url.removesuffix(API_PREFIX)) as client:
        response = await client.post("/_sim/reset")
        assert response.status_code == 200
        yield client


@pytest.fixture
async def catalog(sim_url: str) -> AsyncIterator[CatalogClient]:
    async with CatalogClient(sim_url, timeout=5.0) as client:
        yield client


def section(class_nbr: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "term": TERM,
        "class_nbr": class_nbr,
        "subject": "CSE",
        "catalog_nbr": "310",
        "title": "Data Structures and Algorithms",
        "enrl_cap": 150,
        "enrl_tot": 150,
        "instructors": ["Nakul Gopalan"],
        "days": "M W",
        "start_time": "4:30 PM",
        "end_time": "5:45 PM",
    }
    body.update(fields)
    return body


async def create(control: httpx.AsyncClient, **body: Any) -> None:
    response = await control.post("/_sim/sections", json=body)
    assert response.status_code == 201, response.text


async def test_created_section_is_found_through_the_parser(
    control: httpx.AsyncClient, catalog: CatalogClient
) -> None:
    await create(control, **section("66445", enrl_tot=81, reserved=True))
    state = find_section(await catalog.search_section(TERM, "66445"), TERM, "66445")
    assert state is not None
    assert (state.course, state.title) == ("CSE 310", "Data Structures and Algorithms")
    assert (state.enrl_cap, state.enrl_tot, state.open_seats, state.reserved_seats) == (150, 81, 69, True)
    assert (state.instructors, state.days, state.start_time, state.end_time) == (
        ("Nakul Gopalan",),
        "M W",
        "4:30 PM",
        "5:45 PM",
    )


async def test_client_asks_like_the_catalog_page(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    # The simulator answers 401 to any other Authorization, so a found row proves the header was right.
    await create(control, **section("70380"))
    assert find_section(await catalog.search_section(TERM, "70380"), TERM, "70380") is not None
    stats = (await control.get("/_sim/stats")).json()
    assert stats["by_class_nbr"] == {"70380": 1}


async def test_near_miss_first_still_finds_the_exact_section(
    control: httpx.AsyncClient, catalog: CatalogClient
) -> None:
    await create(control, **section("74350", enrl_tot=150))
    await create(control, **section("74359", enrl_tot=20, instructors=[]))
    await create(control, **section("74400", enrl_tot=20))
    payload = await catalog.search_section(TERM, "74350")
    state = find_section(payload, TERM, "74350")
    assert state is not None
    assert (state.class_nbr, state.open_seats) == ("74350", 0)
    assert b'"74359"' in payload.split(b'"74350"')[0]
    assert b'"74400"' not in payload


async def test_unknown_section_is_not_found(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    await create(control, **section("75092"))
    assert find_section(await catalog.search_section(TERM, "75093"), TERM, "75093") is None
    assert find_section(await catalog.search_section("2274", "75092"), "2274", "75092") is None


async def test_patch_changes_the_next_answer(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    await create(control, **section("65518", enrl_cap=75, enrl_tot=75, instructors=[]))
    before = find_section(await catalog.search_section(TERM, "65518"), TERM, "65518")
    assert before is not None
    assert (before.open_seats, before.instructors) == (0, ())

    response = await control.patch(
        f"/_sim/sections/{TERM}/65518", json={"enrl_tot": 73, "instructors": ["'YZ' Yezhou Yang"]}
    )
    assert response.status_code == 200, response.text
    after = find_section(await catalog.search_section(TERM, "65518"), TERM, "65518")
    assert after is not None
    assert (after.open_seats, after.instructors) == (2, ("'YZ' Yezhou Yang",))


async def test_deleted_section_disappears(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    await create(control, **section("79832"))
    assert (await control.delete(f"/_sim/sections/{TERM}/79832")).status_code == 204
    assert find_section(await catalog.search_section(TERM, "79832"), TERM, "79832") is None
    assert (await control.delete(f"/_sim/sections/{TERM}/79832")).status_code == 404


async def test_injected_503s_are_transient_then_recover(
    control: httpx.AsyncClient, catalog: CatalogClient
) -> None:
    await create(control, **section("81859"))
    response = await control.post("/_sim/faults", json={"status": 503, "count": 2})
    assert response.status_code == 200, response.text
    for _ in range(2):
        with pytest.raises(TransientCatalogError, match="503"):
            await catalog.search_section(TERM, "81859")
    assert find_section(await catalog.search_section(TERM, "81859"), TERM, "81859") is not None
    assert (await control.get("/_sim/stats")).json()["faulted"] == 2


async def test_injected_429_is_transient(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    await control.post("/_sim/faults", json={"status": 429, "count": 1})
    with pytest.raises(TransientCatalogError, match="429"):
        await catalog.search_section(TERM, "81860")


async def test_injected_403_is_permanent(control: httpx.AsyncClient, catalog: CatalogClient) -> None:
    await control.post("/_sim/faults", json={"status": 403, "count": 1})
    with pytest.raises(PermanentCatalogError, match="403"):
        await catalog.search_section(TERM, "81861")


async def test_slow_answer_times_out_as_transient(control: httpx.AsyncClient, sim_url: str) -> None:
    await control.post("/_sim/faults", json={"latency_ms": 1000, "count": 1})
    async with CatalogClient(sim_url, timeout=0.2) as impatient:
        with pytest.raises(TransientCatalogError, match="timed out"):
            await impatient.search_section(TERM, "81862")


async def test_wrong_path_is_permanent(sim_url: str) -> None:
    async with CatalogClient(sim_url + "/nowhere") as lost:
        with pytest.raises(PermanentCatalogError, match="404"):
            await lost.search_section(TERM, "81863")


async def test_nothing_listening_is_transient() -> None:
    async with serve() as url:
        pass
    async with CatalogClient(url, timeout=2.0) as client:
        with pytest.raises(TransientCatalogError, match="unreachable"):
            await client.search_section(TERM, "81864")


@pytest.mark.parametrize("authorization", ["Bearer abc.def", "bearer null", None])
async def test_simulator_rejects_other_authorization(sim_url: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{sim_url}/search/classes", params={"term": TERM, "classNbr": "66445"}, headers=headers
        )
    assert response.status_code == 401


async def test_simulator_answers_course_queries_like_the_real_api(
    control: httpx.AsyncClient, sim_url: str
) -> None:
    await create(control, **section("66445"))
    await create(control, **section("70381", catalog_nbr="340", title="Principles of Programming Languages"))
    await create(control, **section("70382", subject="MAT", catalog_nbr="310", title="Something Else"))
    async with httpx.AsyncClient(headers={"Authorization": "Bearer null"}) as client:
        response = await client.get(
            f"{sim_url}/search/classes", params={"term": TERM, "subject": "CSE", "catalogNbr": "310"}
        )
    body = response.json()
    assert [item["CLAS"]["CLASSNBR"] for item in body["classes"]] == ["66445"]
    assert body["total"] == {"value": 1, "relation": "eq"}
    assert body["classes"][0]["CLAS"]["ENRLCAP"] == "150"
    assert body["classes"][0]["seatInfo"] == {"ENRL_CAP": 150, "ENRL_TOT": 150}


@pytest.mark.parametrize(
    "body",
    [
        {"term": "2271"},
        section("1234"),
        section("12345", term="2272"),
        section("12345", enrl_cap=-1),
        section("12345", start_time="16:30"),
        section("12345", days="Mon"),
        section("12345", colour="red"),
    ],
)
async def test_control_api_rejects_bad_sections(control: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await control.post("/_sim/sections", json=body)
    assert response.status_code == 422
    assert response.json()["error"]


async def test_control_api_patch_errors(control: httpx.AsyncClient) -> None:
    assert (await control.patch(f"/_sim/sections/{TERM}/99999", json={"enrl_tot": 1})).status_code == 404
    await create(control, **section("88888"))
    bad = await control.patch(f"/_sim/sections/{TERM}/88888", json={"enrl_tot": "many"})
    assert bad.status_code == 422
    assert (await control.post("/_sim/faults", json={"status": 200})).status_code == 422


async def test_demo_mode_serves_generated_sections() -> None:
    async with serve(demo=True) as url, httpx.AsyncClient() as client:
        listed = (await client.get(url.removesuffix(API_PREFIX) + "/_sim/sections")).json()["sections"]
        terms = (await client.get(f"{url}/terms")).json()
        async with CatalogClient(url) as catalog:
            first = listed[0]
            state = find_section(
                await catalog.search_section(first["term"], first["class_nbr"]),
                first["term"],
                first["class_nbr"],
            )
    assert len(listed) >= 30
    assert sum(s["enrl_tot"] >= s["enrl_cap"] for s in listed) >= 10
    assert any(not s["instructors"] for s in listed)
    assert {"2271", "2274"} <= {entry["value"] for entry in terms["fullList"]}
    assert state is not None
    assert state.class_nbr == first["class_nbr"]


def test_sim_rows_use_the_real_field_names_and_types() -> None:
    if not ASU_CAPTURE.exists():
        pytest.skip(f"needs ../shared (ASU capture): {ASU_CAPTURE} is missing")
    real = json.loads(ASU_CAPTURE.read_bytes())["classes"][0]["CLAS"]
    sim = clas_row(SimSection(**section("66445")))
    assert set(sim) <= set(real), set(sim) - set(real)
    assert {key: type(value) for key, value in sim.items()} == {key: type(real[key]) for key in sim}
    online = clas_row(SimSection(**section("75092", days="", start_time=None, end_time=None)))
    assert (online["STARTTIME"], online["ENDTIME"]) == (None, None)


def test_demo_data_is_deterministic_and_valid() -> None:
    sections = demo_sections(seed=3)
    assert sections == demo_sections(seed=3)
    assert sections != demo_sections(seed=4)
    assert 35 <= len(sections) <= 45
    assert len({s.key for s in sections}) == len(sections)
    for generated in sections:
        check_section(generated)


def test_demo_drift_opens_then_refills_the_spotlit_sections() -> None:
    sections = {s.key: s for s in demo_sections()}
    watched = [s.key for s in spotlight(list(sections.values()))]
    assert len(watched) == 3
    rng = random.Random(1)
    opened_at: dict[tuple[str, str], int] = {}
    refilled_at: dict[tuple[str, str], int] = {}
    for tick in range(SPOTLIGHT_PERIOD * 2):
        for changed in drift(list(sections.values()), rng, watched, tick):
            sections[changed.key] = changed
        for key in watched:
            is_open = sections[key].enrl_tot < sections[key].enrl_cap
            if is_open:
                opened_at.setdefault(key, tick)
            elif key in opened_at:
                refilled_at.setdefault(key, tick)
    assert opened_at == {key: index for index, key in enumerate(watched)}
    assert refilled_at == {key: index + SPOTLIGHT_PERIOD for index, key in enumerate(watched)}


# Whole-course searches page like Elasticsearch: first page + scrollId, then the same query + scrollId.


async def search(client: httpx.AsyncClient, sim_url: str, **params: str) -> httpx.Response:
    return await client.get(
        f"{sim_url}/search/classes", params=params, headers={"Authorization": "Bearer null"}
    )


async def create_many(control: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> None:
    limit = asyncio.Semaphore(16)

    async def one(body: dict[str, Any]) -> None:
        async with limit:
            await create(control, **body)

    await asyncio.gather(*(one(body) for body in bodies))


async def test_course_of_450_sections_pages_200_200_50_then_empty(
    control: httpx.AsyncClient, sim_url: str
) -> None:
    numbers = [f"{60000 + i:05d}" for i in range(450)]
    await create_many(control, [section(n, enrl_tot=i % 151) for i, n in enumerate(numbers)])
    await create(control, **section("59999", subject="MAT", title="Not This One"))
    query = course_query(TERM, "CSE", "310")
    seen: list[str] = []
    sizes: list[int] = []
    async with httpx.AsyncClient() as client:
        response = await search(client, sim_url, **query)
        scroll_id = response.json()["scrollId"]
        for _ in range(4):
            assert response.status_code == 200, response.text
            page = read_course_page(response.content, TERM, "CSE", "310")
            sizes.append(page.rows)
            seen += [s.class_nbr for s in page.sections]
            assert (page.total, page.scroll_id, page.refused) == (450, scroll_id, ())
            response = await search(client, sim_url, **query, scrollId=scroll_id)
    assert sizes == [200, 200, 50, 0]
    assert seen == numbers
    stats = (await control.get("/_sim/stats")).json()
    assert (stats["searches"], stats["pages"], stats["by_course"]) == (5, 5, {"CSE 310": 5})


async def test_scroll_serves_the_rows_as_they_were_when_the_search_started(
    control: httpx.AsyncClient, sim_url: str
) -> None:
    assert (await control.post("/_sim/reset", json={"page_size": 2})).json()["page_size"] == 2
    for number in ("61001", "61002", "61003"):
        await create(control, **section(number, enrl_tot=150))
    query = course_query(TERM, "CSE", "310")
    async with httpx.AsyncClient() as client:
        first = (await search(client, sim_url, **query)).json()
        patched = await control.patch(f"/_sim/sections/{TERM}/61003", json={"enrl_tot": 100})
        assert patched.status_code == 200
        await create(control, **section("61004"))
        second = (await search(client, sim_url, **query, scrollId=first["scrollId"])).json()
        fresh = (await search(client, sim_url, **query)).json()
    assert [item["CLAS"]["CLASSNBR"] for item in first["classes"]] == ["61001", "61002"]
    assert [item["CLAS"]["CLASSNBR"] for item in second["classes"]] == ["61003"]
    assert second["classes"][0]["seatInfo"]["ENRL_TOT"] == 150
    assert second["total"]["value"] == 3
    assert fresh["total"]["value"] == 4
    assert fresh["scrollId"] != first["scrollId"]


async def test_empty_scroll_id_starts_a_search(control: httpx.AsyncClient, sim_url: str) -> None:
    await create(control, **section("61101"))
    async with httpx.AsyncClient() as client:
        response = await search(client, sim_url, **course_query(TERM, "CSE", "310"), scrollId="")
    assert [item["CLAS"]["CLASSNBR"] for item in response.json()["classes"]] == ["61101"]


async def test_unknown_scroll_id_is_404(control: httpx.AsyncClient, sim_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await search(client, sim_url, **course_query(TERM, "CSE", "310"), scrollId="nope")
    assert response.status_code == 404
    assert "scrollId" in response.json()["error"]
    stats = (await control.get("/_sim/stats")).json()
    assert (stats["searches"], stats["pages"]) == (1, 0)


async def test_reset_forgets_open_scrolls_and_page_size(control: httpx.AsyncClient, sim_url: str) -> None:
    await control.post("/_sim/reset", json={"page_size": 1})
    await create(control, **section("61201"))
    await create(control, **section("61202"))
    async with httpx.AsyncClient() as client:
        first = (await search(client, sim_url, **course_query(TERM, "CSE", "310"))).json()
        assert len(first["classes"]) == 1
        reset = await control.post("/_sim/reset")
        assert reset.json()["page_size"] == 200
        gone = await search(client, sim_url, **course_query(TERM, "CSE", "310"), scrollId=first["scrollId"])
    assert gone.status_code == 404


@pytest.mark.parametrize("body", [{"page_size": 0}, {"page_size": "big"}, {"pages": 3}])
async def test_reset_rejects_bad_paging(control: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await control.post("/_sim/reset", json=body)
    assert response.status_code == 422
    assert response.json()["error"]


async def test_class_number_search_is_one_page_as_before(
    control: httpx.AsyncClient, catalog: CatalogClient
) -> None:
    await create(control, **section("62350", enrl_tot=150))
    await create(control, **section("62351", enrl_tot=20))
    payload = await catalog.search_section(TERM, "62350")
    body = json.loads(payload)
    assert [item["CLAS"]["CLASSNBR"] for item in body["classes"]] == ["62351", "62350"]
    assert body["total"] == {"value": 2, "relation": "eq"}
    state = find_section(payload, TERM, "62350")
    assert state is not None
    assert state.term_end == "2027-05-08"
    stats = (await control.get("/_sim/stats")).json()
    assert (stats["by_class_nbr"], stats["by_course"]) == ({"62350": 1}, {})


async def test_rows_carry_the_term_end(control: httpx.AsyncClient, sim_url: str) -> None:
    await create(control, **section("62401"))
    await create(control, **section("62402", term_end="2025-12-12"))
    async with httpx.AsyncClient() as client:
        response = await search(client, sim_url, **course_query(TERM, "CSE", "310"))
    rows = {item["CLAS"]["CLASSNBR"]: item["CLAS"] for item in response.json()["classes"]}
    assert rows["62401"]["TERMENDDATE"] == "2027-05-08 00:00:00.0"
    assert rows["62402"]["TERMENDDATE"] == "2025-12-12 00:00:00.0"
    page = read_course_page(response.content, TERM, "CSE", "310")
    assert {s.class_nbr: s.term_end for s in page.sections} == {"62401": "2027-05-08", "62402": "2025-12-12"}


@pytest.mark.parametrize("term_end", ["2025-02-30", "12/12/2025", "2025-12-12 00:00:00.0"])
async def test_control_api_rejects_bad_term_end(control: httpx.AsyncClient, term_end: str) -> None:
    response = await control.post("/_sim/sections", json=section("62403", term_end=term_end))
    assert response.status_code == 422
    assert "term_end" in response.json()["error"]


def test_scroll_contexts_are_bounded() -> None:
    catalog = SimCatalog([SimSection(**section("62501"))], page_size=1)
    first = catalog.first_page(list(catalog.sections.values()))
    for _ in range(MAX_SCROLLS):
        catalog.first_page(list(catalog.sections.values()))
    assert catalog.stats()["scrolls"] == MAX_SCROLLS
    assert catalog.next_page(first["scrollId"]) is None
