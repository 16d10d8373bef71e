"""Adding watches: the check a new section costs (at most one per window), the terms offered, several at
once from a paste, and the preview of a stored section. Real PostgreSQL, Redis and JetStream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from services.gateway.app import create_app
from services.gateway.sessions import start_session
from services.gateway.terms import arizona_today, term_problem, upcoming_terms
from services.gateway.watches import MAX_WATCHES
from shared.asu import catalog_url
from shared.events import CheckSection, decode
from shared.settings import Settings
from shared.streams import Topology
from tests.jetstream import fetch

Client = AsyncTestClient[Litestar]
# An hour-long check window: every test here runs inside one.
INTERVAL = 3600


def offered() -> list[str]:
    return [term.code for term in upcoming_terms(arizona_today())]


@pytest.fixture
def hourly(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, check_interval_seconds=INTERVAL)


@pytest.fixture
async def client(
    hourly: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(hourly)) as test_client:
        yield test_client
    keys = [key async for key in redis_client.scan_iter(f"{hourly.namespace}:*")]
    if keys:
        await redis_client.delete(*keys)


async def log_in(client: Client, db: asyncpg.Pool, redis_client: redis.Redis, settings: Settings) -> int:
    """A student with a session held by `client` (the account flows have their own tests)."""
    user_id: int = await db.fetchval(
        "INSERT INTO app_user (email, password_hash, email_verified) VALUES ('sparky@asu.edu', 'x', true)"
        " RETURNING id"
    )
    cookie = await start_session(redis_client, settings, user_id)
    assert cookie.value is not None
    client.cookies.set(cookie.key, cookie.value)
    return user_id


@pytest.fixture
async def student(client: Client, db: asyncpg.Pool, redis_client: redis.Redis, hourly: Settings) -> int:
    """A logged-in student: `client` holds the session."""
    return await log_in(client, db, redis_client, hourly)


async def checks_stored(js: JetStreamContext, topology: Topology) -> int:
    """How many checks were ever stored in the checks stream (consumed ones included)."""
    return (await js.stream_info(topology.checks_stream)).state.last_seq


async def store_section(db: asyncpg.Pool, term: str, class_nbr: str, **seats: int) -> None:
    await db.execute(
        """
        INSERT INTO section (term, class_nbr, subject, catalog_nbr, title, section, instructors, enrl_cap,
            enrl_tot, open_seats, reserved_seats, days, start_time, end_time, location, snapshot_id,
            scraped_at)
        VALUES ($1, $2, 'CSE', '310', 'Data Structures and Algorithms', '1001', $3, $4, $5, $6, false,
            'M W', '4:30 PM', '5:45 PM', 'Tempe PSH153', 'snap-1', $7)
        """,
        term,
        class_nbr,
        ["Ruben Acuna"],
        seats.get("enrl_cap", 150),
        seats.get("enrl_tot", 148),
        seats.get("open_seats", 2),
        datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
    )


async def test_adding_and_deleting_a_section_100_times_costs_one_check_in_a_window(
    client: Client, student: int, js: JetStreamContext, topology: Topology
) -> None:
    term = offered()[0]
    window = Topology(topology.namespace, INTERVAL).window_of(time.time())
    for cycle in range(100):
        added = await client.post("/api/v1/watches", json={"term": term, "class_nbr": "66445"})
        assert added.status_code == 201, added.text
        assert (await client.delete(f"/api/v1/watches/{added.json()['id']}")).status_code == 204
        if cycle == 50:
            # The scraper takes the check (the work queue drops it): its id still counts as asked for.
            [taken] = await fetch(js, topology.scraper)
            await taken.ack_sync()
    windows = Topology(topology.namespace, INTERVAL).window_of(time.time()) - window + 1
    # One check a window: the 100 cycles take a second or two, and may straddle a window's end.
    assert await checks_stored(js, topology) == windows
    # The scheduler asking for the same section in the same window is the same check.
    ack = await js.publish(
        topology.check_subject,
        b"{}",
        headers={"Nats-Msg-Id": topology.check_msg_id(term, "66445", window)},
    )
    assert ack.duplicate is True


async def test_a_new_section_is_checked_under_the_schedulers_id_for_this_window(
    client: Client, student: int, js: JetStreamContext, topology: Topology
) -> None:
    term = offered()[1]
    assert (
        await client.post("/api/v1/watches", json={"term": term, "class_nbr": "70001"})
    ).status_code == 201
    message = await js.get_last_msg(topology.checks_stream, topology.check_subject)
    assert message.data is not None
    check = decode(message.data, CheckSection)
    assert (check.term, check.class_nbr) == (term, "70001")
    assert check.window == Topology(topology.namespace, INTERVAL).window_of(check.requested_at)
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == topology.check_msg_id(term, "70001", check.window)


async def test_a_section_already_stored_costs_no_check(
    client: Client, student: int, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    term = offered()[0]
    await store_section(db, term, "66445")
    created = await client.post("/api/v1/watches", json={"term": term, "class_nbr": "66445"})
    assert created.status_code == 201
    assert created.json()["status"] == "found"
    assert await checks_stored(js, topology) == 0


async def test_the_terms_offered_are_the_current_and_next_two_with_one_default(client: Client) -> None:
    terms = (await client.get("/api/v1/terms")).json()
    assert [t["code"] for t in terms] == offered()
    assert all(t["label"] for t in terms)
    assert sum(t["default"] for t in terms) == 1


@pytest.mark.parametrize("term", ["2001", "2997"])
async def test_an_ended_or_unknown_term_is_a_422_naming_the_terms_accepted(
    client: Client, student: int, db: asyncpg.Pool, term: str
) -> None:
    response = await client.post("/api/v1/watches", json={"term": term, "class_nbr": "66445"})
    assert response.status_code == 422
    assert response.json() == {"detail": term_problem(term, arizona_today())}
    assert all(code in response.json()["detail"] for code in offered())
    bulk = await client.post("/api/v1/watches/bulk", json={"term": term, "text": "66445"})
    assert bulk.status_code == 422
    assert bulk.json() == response.json()
    assert await db.fetchval("SELECT count(*) FROM watch") == 0


async def test_a_paste_of_numbers_and_links_adds_each_once_and_says_what_it_could_not(
    client: Client, student: int, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    term, other = offered()[0], offered()[1]
    await store_section(db, term, "33333")
    text = (
        f"12345, 23456;\n{catalog_url(term, '33333')}\n"
        f"(https://catalog.apps.asu.edu/catalog/classes/classlist?keywords=44444).\n"
        f"{catalog_url(other, '55555')} 1234 12345 https://example.com/12345"
    )
    response = await client.post("/api/v1/watches/bulk", json={"term": term, "text": text})
    assert response.status_code == 200, response.text
    result = response.json()
    assert [w["class_nbr"] for w in result["added"]] == ["12345", "23456", "33333", "44444"]
    assert {w["term"] for w in result["added"]} == {term}
    assert result["already"] == []
    # In the order pasted.
    assert [e["input"] for e in result["errors"]] == [
        catalog_url(other, "55555"),
        "1234",
        "https://example.com/12345",
    ]
    assert "is for" in result["errors"][0]["message"]
    assert result["errors"][1]["message"] == "class number must be 5 digits"
    assert result["errors"][2]["message"] == "not a link to one class in the ASU class search"
    # Sections never seen are checked; the stored one is not.
    assert await checks_stored(js, topology) == 3

    again = (await client.post("/api/v1/watches/bulk", json={"term": term, "text": "12345 66445"})).json()
    assert [w["class_nbr"] for w in again["added"]] == ["66445"]
    assert again["already"] == ["12345"]
    assert len((await client.get("/api/v1/watches")).json()) == 5


async def test_a_paste_stops_at_the_watch_limit(client: Client, student: int, db: asyncpg.Pool) -> None:
    term = offered()[0]
    await db.executemany(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)",
        [(student, term, f"{10000 + n}") for n in range(MAX_WATCHES - 2)],
    )
    result = (
        await client.post("/api/v1/watches/bulk", json={"term": term, "text": "20001 20002 20003 20004"})
    ).json()
    assert [w["class_nbr"] for w in result["added"]] == ["20001", "20002"]
    assert result["errors"] == [
        {"input": "20003", "message": f"watch limit reached ({MAX_WATCHES})"},
        {"input": "20004", "message": f"watch limit reached ({MAX_WATCHES})"},
    ]
    assert await db.fetchval("SELECT count(*) FROM watch") == MAX_WATCHES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"term": " ", "text": "12345"}, "term is required"),
        ({"term": "fall", "text": "12345"}, "term must be an ASU term code like 2267 (Fall 2026)"),
        ({"text": "no numbers here"}, "paste one or more 5-digit class numbers or class search links"),
        (
            {"text": " ".join(str(10000 + n) for n in range(26))},
            "paste at most 25 class numbers or links at once",
        ),
        ({"text": "1" * 8001}, "paste at most 8000 characters at once"),
    ],
)
async def test_a_paste_with_nothing_to_add_or_too_much_is_a_422(
    client: Client, student: int, body: dict[str, str], message: str
) -> None:
    response = await client.post("/api/v1/watches/bulk", json={"term": offered()[0], **body})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(message)


async def test_a_preview_shows_a_stored_section_to_a_logged_in_student(
    client: Client,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
    hourly: Settings,
) -> None:
    term = offered()[0]
    await store_section(db, term, "66445", enrl_cap=40, enrl_tot=37, open_seats=3)
    assert (await client.get(f"/api/v1/sections/{term}/66445")).status_code == 401
    await log_in(client, db, redis_client, hourly)

    preview = await client.get(f"/api/v1/sections/{term}/66445")
    assert preview.status_code == 200
    section = preview.json()
    assert (section["course"], section["title"], section["instructors"]) == (
        "CSE 310",
        "Data Structures and Algorithms",
        ["Ruben Acuna"],
    )
    assert (section["open_seats"], section["enrl_cap"], section["days"], section["start_time"]) == (
        3,
        40,
        "M W",
        "4:30 PM",
    )
    assert section["last_checked"].startswith("2026-11-20T12:00:00")

    unknown = await client.get(f"/api/v1/sections/{term}/70000")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "not checked yet: add it and we look it up within minutes"}
    await db.execute(
        "INSERT INTO section_missing (term, class_nbr, snapshot_id, missing_count, first_missing_at,"
        " last_missing_at) VALUES ($1, '70001', 'miss-1', 1, now(), now())",
        term,
    )
    never_found = await client.get(f"/api/v1/sections/{term}/70001")
    assert never_found.status_code == 404
    assert "was not listed" in never_found.json()["detail"]
    for path, message in (
        ("/api/v1/sections/fall/66445", "term must be an ASU term code like 2267 (Fall 2026)"),
        (f"/api/v1/sections/{term}/6644", "class number must be 5 digits"),
    ):
        bad = await client.get(path)
        assert (bad.status_code, bad.json()) == (422, {"detail": message})
    # Nothing is looked up for a preview.
    assert await checks_stored(js, topology) == 0
