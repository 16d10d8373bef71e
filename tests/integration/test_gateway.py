"""The gateway's HTTP API against real Postgres, Redis and NATS (in-process client, app in its own loop)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from services.gateway.app import create_app
from services.gateway.sessions import session_key
from shared.events import CheckSection, decode
from shared.settings import Settings
from shared.streams import Topology
from shared.tokens import UNSUBSCRIBE, sign
from tests.accounts import PASSWORD, sign_up
from tests.factories import OPEN_TERM

JSON = {"Content-Type": "application/json"}

Client = AsyncTestClient[Litestar]


async def forget_keys(redis_client: redis.Redis, namespace: str) -> None:
    """Sessions live for 30 days: leave no test keys behind in a shared Redis."""
    keys = [key async for key in redis_client.scan_iter(f"{namespace}:*")]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


class Register(Protocol):
    def __call__(self, client: httpx.AsyncClient, email: str = "sparky@asu.edu") -> Awaitable[int]: ...


@pytest.fixture
def register(js: JetStreamContext, topology: Topology, settings: Settings) -> Register:
    """Register and verify through the emailed link: the client holds the session the link started."""

    def sign_up_with(client: httpx.AsyncClient, email: str = "sparky@asu.edu") -> Awaitable[int]:
        return sign_up(client, js, topology, settings, email, PASSWORD)

    return sign_up_with


async def add_section(db: asyncpg.Pool, term: str, class_nbr: str) -> None:
    await db.execute(
        """
        INSERT INTO section (term, class_nbr, subject, catalog_nbr, title, section, instructors, enrl_cap,
            enrl_tot, open_seats, reserved_seats, days, start_time, end_time, location, snapshot_id,
            scraped_at)
        VALUES ($1, $2, 'CSE', '310', 'Data Structures and Algorithms', '1001', $3, 150, 148, 2, true,
            'M W', '4:30 PM', '5:45 PM', 'Tempe PSH153', 'snap-1', $4)
        """,
        term,
        class_nbr,
        ["Staff", "Ruben Acuna"],
        datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
    )


async def mark_missing(db: asyncpg.Pool, term: str, class_nbr: str) -> None:
    await db.execute(
        "INSERT INTO section_missing (term, class_nbr, snapshot_id, missing_count, first_missing_at,"
        " last_missing_at) VALUES ($1, $2, 'miss-1', 2, now(), now())",
        term,
        class_nbr,
    )


async def test_register_login_logout_and_me(client: Client, register: Register) -> None:
    user_id = await register(client, "Sparky@ASU.edu")
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json() == {
        "id": user_id,
        "email": "Sparky@ASU.edu",
        "notifications_enabled": True,
        "email_status": "ok",
    }

    cookie = client.cookies.get("pmc_session")
    assert cookie
    set_cookie = await client.post(
        "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": PASSWORD}
    )
    assert set_cookie.status_code == 200
    header = set_cookie.headers["set-cookie"].lower()
    assert "httponly" in header
    assert "samesite=lax" in header
    assert client.cookies.get("pmc_session") != cookie

    assert (await client.post("/api/v1/auth/logout", headers=JSON)).status_code == 204
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_bad_credentials_get_the_same_answer_whether_or_not_the_account_exists(
    client: Client, register: Register
) -> None:
    await register(client)
    wrong_password = await client.post(
        "/api/v1/auth/login", json={"email": "sparky@asu.edu", "password": "x" * 9}
    )
    no_account = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@asu.edu", "password": "x" * 9}
    )
    assert wrong_password.status_code == no_account.status_code == 401
    assert wrong_password.json() == no_account.json() == {"detail": "wrong email or password"}


async def test_repeated_failed_logins_lock_the_email(client: Client) -> None:
    body = {"email": "nobody@asu.edu", "password": "x" * 9}
    statuses = [(await client.post("/api/v1/auth/login", json=body)).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_parallel_guesses_cannot_outrun_the_lock(client: Client) -> None:
    body = {"email": "target@asu.edu", "password": "x" * 9}
    responses = await asyncio.gather(*(client.post("/api/v1/auth/login", json=body) for _ in range(12)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email must look like name@example.edu"),
        ({"email": "two,people@asu.edu", "password": PASSWORD}, "email must look like name@example.edu"),
        ({"password": PASSWORD}, "email is required"),
        ({"email": "a@asu.edu", "password": "short"}, "password must be at least 8 characters"),
        ({"email": "a@asu.edu", "password": "x" * 1025}, "password must be at most 1024 characters"),
    ],
)
async def test_registration_is_validated(client: Client, body: dict[str, str], message: str) -> None:
    response = await client.post("/api/v1/auth/register", json={**body, "unknown": "ignored"})
    assert response.status_code == 422
    assert response.json() == {"detail": message}


async def test_a_field_of_the_wrong_type_is_a_422_with_a_message(client: Client) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": 5, "password": PASSWORD})
    assert response.status_code == 422
    assert "email" in response.json()["detail"]


async def test_state_changing_api_calls_must_be_json(client: Client) -> None:
    form = await client.post("/api/v1/auth/login", data={"email": "a@asu.edu", "password": PASSWORD})
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    no_type = await client.post("/api/v1/auth/logout")
    assert no_type.status_code == 415


async def test_malformed_json_is_a_400(client: Client) -> None:
    response = await client.post("/api/v1/auth/login", content=b"{nope", headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"detail": "the request body is not valid JSON"}


async def test_watches_and_events_need_a_session(client: Client) -> None:
    for method, path in [
        ("GET", "/api/v1/watches"),
        ("GET", "/api/v1/events"),
        ("DELETE", "/api/v1/watches/1"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "log in first"}
    response = await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
    assert response.status_code == 401


async def test_add_list_and_delete_a_watch(client: Client, register: Register) -> None:
    await register(client)
    created = await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
    assert created.status_code == 201, created.text
    watch = created.json()
    assert watch["term"] == OPEN_TERM.code
    assert watch["term_label"] == OPEN_TERM.label
    assert watch["class_nbr"] == "66445"
    assert watch["section"] is None
    assert "keywords=66445" in watch["catalog_url"]

    listed = await client.get("/api/v1/watches")
    assert listed.json() == [watch]

    again = await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
    assert again.status_code == 409
    assert "already watch" in again.json()["detail"]

    assert (await client.delete(f"/api/v1/watches/{watch['id']}")).status_code == 204
    assert (await client.get("/api/v1/watches")).json() == []
    assert (await client.delete(f"/api/v1/watches/{watch['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"term": "fall", "class_nbr": "66445"}, "term must be an ASU term code like 2267 (Fall 2026)"),
        ({"term": "2262", "class_nbr": "66445"}, "term must be an ASU term code like 2267 (Fall 2026)"),
        ({"class_nbr": "66445"}, "term is required"),
        ({"term": OPEN_TERM.code, "class_nbr": "6644"}, "class number must be 5 digits"),
        ({"term": OPEN_TERM.code, "class_nbr": "abcde"}, "class number must be 5 digits"),
        ({"term": OPEN_TERM.code}, "class number is required"),
    ],
)
async def test_watch_input_is_validated(
    client: Client, body: dict[str, str], message: str, register: Register
) -> None:
    await register(client)
    response = await client.post("/api/v1/watches", json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": message}


async def test_watches_are_capped_per_user(client: Client, db: asyncpg.Pool, register: Register) -> None:
    user_id = await register(client)
    await db.executemany(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)",
        [(user_id, OPEN_TERM.code, f"{10000 + n}") for n in range(25)],
    )
    response = await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
    assert response.status_code == 422
    assert response.json() == {"detail": "watch limit reached (25)"}


async def test_someone_elses_watch_is_invisible_and_cannot_be_deleted(
    client: Client, settings: Settings, db: asyncpg.Pool, register: Register
) -> None:
    await register(client, "owner@asu.edu")
    watch = (await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})).json()
    async with AsyncTestClient(app=create_app(settings)) as other:
        await register(other, "other@asu.edu")
        assert (await other.get("/api/v1/watches")).json() == []
        missing = await other.delete("/api/v1/watches/999999")
        foreign = await other.delete(f"/api/v1/watches/{watch['id']}")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
    assert await db.fetchval("SELECT count(*) FROM watch") == 1


async def test_a_new_watch_asks_for_an_immediate_check(
    client: Client, js: JetStreamContext, topology: Topology, register: Register
) -> None:
    await register(client)
    await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
    message = await js.get_last_msg(topology.checks_stream, topology.check_subject)
    assert message.data is not None
    check = decode(message.data, CheckSection)
    assert (check.term, check.class_nbr) == (OPEN_TERM.code, "66445")
    assert check.window == topology.window_of(check.requested_at)
    assert message.headers is not None
    # The section's check of this window: a watch added again in the same window asks for nothing more.
    assert message.headers["Nats-Msg-Id"] == topology.check_msg_id(OPEN_TERM.code, "66445", check.window)


async def test_watches_show_the_latest_section_state(
    client: Client, db: asyncpg.Pool, register: Register
) -> None:
    await register(client)
    await add_section(db, OPEN_TERM.code, "66445")
    await add_section(db, OPEN_TERM.code, "70000")
    await mark_missing(db, OPEN_TERM.code, "70000")
    await mark_missing(db, OPEN_TERM.code, "70001")
    for class_nbr in ("66445", "70000", "70001", "70002"):
        await client.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": class_nbr})
    found, missing, never_found, unchecked = (await client.get("/api/v1/watches")).json()
    assert [w["status"] for w in (found, missing, never_found, unchecked)] == [
        "found",
        "not_found",
        "not_found",
        "checking",
    ]
    assert never_found["section"] is None
    section = found["section"]
    assert section["course"] == "CSE 310"
    assert section["title"] == "Data Structures and Algorithms"
    assert (section["open_seats"], section["enrl_cap"], section["enrl_tot"]) == (2, 150, 148)
    assert section["reserved_seats"] is True
    assert section["instructors"] == ["Staff", "Ruben Acuna"]
    assert section["instructor_label"] == "Staff, Ruben Acuna"
    assert [link["name"] for link in section["instructor_links"]] == ["Ruben Acuna"]
    assert section["last_checked"].startswith("2026-11-20T12:00:00")
    assert section["found"] is True
    assert missing["section"]["found"] is False


async def test_watches_of_sections_no_longer_checked_say_why(
    client: Client, db: asyncpg.Pool, register: Register
) -> None:
    user_id = await register(client)
    await add_section(db, "2267", "66445")
    await add_section(db, "2261", "11111")
    await add_section(db, "2264", "33333")
    for term, class_nbr in (("2267", "66445"), ("2267", "70001"), ("2261", "22222")):
        await mark_missing(db, term, class_nbr)
    await db.execute("UPDATE section_missing SET gone_at = now(), gone_snapshot_id = 'miss-1'")
    today = date.today()
    await db.execute("UPDATE section SET term_end = $1 WHERE term = '2261'", today - timedelta(days=1))
    await db.execute("UPDATE section SET term_end = $1 WHERE term = '2264'", today)
    sections = (("2267", "66445"), ("2267", "70001"), ("2261", "11111"), ("2261", "22222"), ("2264", "33333"))
    # Stored directly: the API no longer takes watches of past terms; these are watches that were added
    # while their terms ran.
    await db.executemany(
        "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)",
        [(user_id, term, class_nbr) for term, class_nbr in sections],
    )
    retired, never_found, ended, ended_and_retired, last_day = (await client.get("/api/v1/watches")).json()
    assert [w["status"] for w in (retired, never_found, ended, ended_and_retired, last_day)] == [
        "gone",
        "gone",
        "ended",
        "ended",  # an ended term wins over everything
        "found",  # a term's last day is still in it
    ]
    assert retired["section"]["course"] == "CSE 310"
    assert retired["section"]["found"] is False
    assert never_found["section"] is None
    assert ended["section"]["found"] is True


async def test_unsubscribe_needs_a_post(
    client: Client, settings: Settings, db: asyncpg.Pool, register: Register
) -> None:
    user_id = await register(client)
    token = sign(settings.secret_key, UNSUBSCRIBE, str(user_id), 3600)
    client.cookies.clear()

    page = await client.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200
    assert "<form" in page.text
    assert await db.fetchval("SELECT notifications_enabled FROM app_user WHERE id = $1", user_id) is True

    done = await client.post(
        "/unsubscribe",
        params={"token": token},
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert "unsubscribed" in done.text
    assert await db.fetchval("SELECT notifications_enabled FROM app_user WHERE id = $1", user_id) is False


async def test_an_unsubscribed_student_can_turn_emails_back_on(
    client: Client, settings: Settings, db: asyncpg.Pool, register: Register
) -> None:
    user_id = await register(client)
    token = sign(settings.secret_key, UNSUBSCRIBE, str(user_id), 3600)
    await client.post(
        "/unsubscribe",
        params={"token": token},
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (await client.get("/api/v1/auth/me")).json()["notifications_enabled"] is False
    nothing = await client.patch("/api/v1/auth/me", json={})
    assert nothing.status_code == 422
    turned_on = await client.patch("/api/v1/auth/me", json={"notifications_enabled": True})
    assert turned_on.status_code == 200
    assert turned_on.json()["notifications_enabled"] is True
    assert await db.fetchval("SELECT notifications_enabled FROM app_user WHERE id = $1", user_id) is True


async def test_a_bad_or_expired_unsubscribe_token_is_a_400_page(client: Client, settings: Settings) -> None:
    expired = sign(settings.secret_key, UNSUBSCRIBE, "1", 60, now=0)
    other_purpose = sign(settings.secret_key, "reset", "1", 3600)
    for token in ("garbage", expired, other_purpose):
        for method in ("GET", "POST"):
            response = await client.request(method, "/unsubscribe", params={"token": token})
            assert response.status_code == 400
            assert "invalid or has expired" in response.text
            assert response.headers["content-type"].startswith("text/html")


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"nats": True, "postgres": True, "redis": True}}


async def test_readiness_names_the_failing_dependency(settings: Settings) -> None:
    unreachable = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    async with AsyncTestClient(app=create_app(unreachable)) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"nats": True, "postgres": True, "redis": False},
    }


async def insert_email(db: asyncpg.Pool, email_id: str, to: str, subject: str) -> None:
    await db.execute(
        "INSERT INTO outbox_email (id, to_addr, subject, text_body, html_body, headers)"
        " VALUES ($1, $2, $3, 'Go <now>', '<p style=\"color:red\">Go</p>',"
        ' \'{"List-Unsubscribe": "<http://x>"}\')',
        email_id,
        to,
        subject,
    )


async def test_dev_outbox_shows_a_student_only_their_own_emails(
    client: Client, settings: Settings, db: asyncpg.Pool, register: Register
) -> None:
    anonymous = await client.get("/dev/outbox")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    assert (await client.get("/dev/outbox.json")).status_code == 401

    await register(client, "sparky@asu.edu")
    await insert_email(db, "m1", "Sparky@ASU.edu", "Seat available: CSE 310 (66445)")
    await insert_email(db, "m2", "other@asu.edu", "Someone else's alert")
    page = await client.get("/dev/outbox")
    assert page.status_code == 200
    assert "Seat available: CSE 310 (66445)" in page.text
    assert "Go &lt;now&gt;" in page.text
    assert "Someone else" not in page.text
    emails = (await client.get("/dev/outbox.json")).json()
    assert [(e["id"], e["subject"], e["headers"]) for e in emails if e["to"] == "Sparky@ASU.edu"] == [
        ("m1", "Seat available: CSE 310 (66445)", {"List-Unsubscribe": "<http://x>"})
    ]
    assert [e["id"] for e in emails] == ["m1"]

    # The HTML body is a document of its own, framed by the page, with its inline styles allowed.
    body = await client.get("/dev/outbox/m1")
    assert body.status_code == 200
    assert 'style="color:red"' in body.text
    policy = body.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in policy
    assert "frame-ancestors 'self'" in policy
    assert "script-src" not in policy
    assert (await client.get("/dev/outbox/m2")).status_code == 404

    # Scripts, and a student whose address is not verified yet, use the account's email and password.
    async with AsyncTestClient(app=create_app(settings)) as script:
        by_password = await script.get("/dev/outbox.json", auth=("SPARKY@asu.edu", PASSWORD))
        assert by_password.status_code == 200
        assert [e["id"] for e in by_password.json()] == ["m1"]
        wrong = await script.get("/dev/outbox.json", auth=("sparky@asu.edu", "not the password"))
        assert wrong.status_code == 401


async def test_dev_outbox_is_absent_with_a_real_email_backend(settings: Settings) -> None:
    resend = msgspec.structs.replace(settings, email_backend="resend", resend_api_key="re_test")
    async with AsyncTestClient(app=create_app(resend)) as client:
        assert (await client.get("/dev/outbox")).status_code == 404
        assert (await client.get("/dev/outbox.json")).status_code == 404


async def test_the_page_and_its_assets_are_served(client: Client) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "PickMyClass" in page.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset
    terms = (await client.get("/api/v1/terms")).json()
    assert terms
    assert all(term["label"] for term in terms)


async def test_unknown_pages_are_404_without_internals(client: Client) -> None:
    api = await client.get("/api/v1/nope")
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}
    page = await client.get("/nope")
    assert page.status_code == 404
    assert "Traceback" not in page.text


async def test_an_internal_error_is_a_short_json_500(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    await redis_client.set(session_key(settings.namespace, "corrupt"), b"not-a-user-id", ex=60)
    client.cookies.set("pmc_session", "corrupt")
    response = await client.get("/api/v1/watches")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}


async def test_a_nul_character_in_a_path_is_refused_not_a_server_error(client: Client) -> None:
    for path in ("/static/%00", "/static/app.js%00.map"):
        response = await client.get(path)
        assert response.status_code == 400, path
        assert "the path holds a NUL character" in response.text


async def test_watch_ids_beyond_what_the_database_holds_are_refused_not_a_server_error(
    client: Client, register: Register
) -> None:
    await register(client)
    for huge in ("9223372036854775808", "99999999999999999999999", "0", "-1"):
        deleted = await client.delete(f"/api/v1/watches/{huge}")
        patched = await client.patch(f"/api/v1/watches/{huge}", json={"alerts": {}})
        assert (deleted.status_code, patched.status_code) == (400, 400), huge
    assert (await client.delete("/api/v1/watches/9223372036854775807")).status_code == 404
