"""Schemathesis over the gateway's own OpenAPI document: every operation, called as a logged-in student with
the document's examples and with generated valid and invalid input, against real PostgreSQL, Redis and
JetStream. No answer may be a server error. The inputs are derandomized (the same every run) and bounded, so
this takes seconds.

Valid input is made to reach the handler's work, not only its checks: the student is an admin for admin
operations, ids name the student's own watch or another student, the document's example credentials are
the student's own, webhooks are signed, and throttles are cleared before each account call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from nats.js import JetStreamContext
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from devtools.resend_webhooks import new_secret, signed_headers
from services.detector.store import apply_snapshots
from services.gateway.app import create_app
from services.gateway.auth import EMAIL_SCHEMA, PASSWORD_SCHEMA
from services.gateway.passwords import hash_password
from services.gateway.sessions import COOKIE, start_session
from services.gateway.terms import arizona_today, upcoming_terms
from shared.settings import Settings
from tests.accounts import PASSWORD
from tests.factories import snapshot

# Inputs per operation and kind.
EXAMPLES = 12
# An event stream never ends: its call is cut here (every other answer comes in milliseconds).
CALL_TIMEOUT = 1.0


# Every student watches this section, which has a stored state and a seat history.
WATCHED = "12345"


class Student(NamedTuple):
    user_id: int
    email: str
    session: str
    watch_id: int


class Students:
    """A new student (verified, password `PASSWORD`) with a new session and a watch for every call, so that
    one call logging out, or deleting the account or the watch, does not turn the calls after it into 401s
    or 404s. Made on a loop of its own: schemathesis runs the app on its own thread, and calls it from this
    one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._redis: redis.Redis | None = None
        self._made = 0
        # One hash for all: hashing is made slow on purpose.
        self._password_hash = hash_password(PASSWORD)

    async def _connected(self) -> tuple[asyncpg.Connection, redis.Redis]:
        if self._conn is None or self._redis is None:
            self._conn = await asyncpg.connect(self._settings.database_url)
            self._redis = redis.Redis.from_url(self._settings.redis_url)
        return self._conn, self._redis

    async def _new(self, admin: bool) -> Student:
        conn, redis_client = await self._connected()
        self._made += 1
        email = f"fuzz{self._made}@asu.edu"
        user_id = await conn.fetchval(
            "INSERT INTO app_user (email, password_hash, email_verified, is_admin) VALUES ($1, $2, true, $3)"
            " RETURNING id",
            email,
            self._password_hash,
            admin,
        )
        watch_id = await conn.fetchval(
            "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3) RETURNING id",
            user_id,
            upcoming_terms(arizona_today())[0].code,
            WATCHED,
        )
        cookie = await start_session(redis_client, self._settings, user_id)
        assert cookie.value is not None
        return Student(user_id, email, cookie.value, watch_id)

    def new(self, *, admin: bool = False) -> Student:
        return self._loop.run_until_complete(self._new(admin))

    async def _forget(self, pattern: str) -> None:
        _, redis_client = await self._connected()
        keys = [key async for key in redis_client.scan_iter(f"{self._settings.namespace}:{pattern}", 1000)]
        if keys:
            await redis_client.delete(*keys)

    def clear_throttles(self) -> None:
        """Every call comes from one client address: without this, a few calls to the throttled account
        endpoints would leave only 429s for the rest."""
        self._loop.run_until_complete(self._forget("limits:*"))

    def close(self) -> None:
        async def close() -> None:
            # Sessions live for days: leave no test keys behind in a shared Redis.
            await self._forget("*")
            if self._conn is not None:
                await self._conn.close()
            if self._redis is not None:
                await self._redis.aclose()

        self._loop.run_until_complete(close())
        self._loop.close()


@pytest.fixture
async def watched_section(db: asyncpg.Pool) -> None:
    """The watched section as the detector stores it, its seats changing over the last days."""
    term = upcoming_terms(arizona_today())[0].code
    now = time.time()
    for n, taken in enumerate((100, 98, 100, 99)):
        at = now - (4 - n) * 86400
        await apply_snapshots(db, [snapshot(f"s{n}", at, term=term, class_nbr=WATCHED, enrl_tot=taken)])


# Webhooks are verified with this secret, and signed with it where they should be valid.
WEBHOOK_SECRET = new_secret()


@pytest.fixture
def gateway(settings: Settings, watched_section: None, js: JetStreamContext) -> Iterator[Litestar]:
    configured = msgspec.structs.replace(settings, resend_webhook_secret=WEBHOOK_SECRET)
    # Frequent pings: the event stream's call ends at CALL_TIMEOUT with some of them read.
    yield create_app(configured, ping_interval=0.05)
    asgi.shutdown_lifespans()


@pytest.fixture
def students(settings: Settings) -> Iterator[Students]:
    made = Students(settings)
    yield made
    made.close()


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def inputs(schema: schemathesis.BaseSchema, operation: Operation) -> dict[str, st.SearchStrategy[Case[Any]]]:
    """The inputs to try, by kind: the document's examples (where it has any), valid and invalid ones."""
    kinds = {
        "positive": operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        "negative": operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    }
    if examples := schema.get_strategies_from_examples(operation):
        kinds["examples"] = st.one_of(examples)
    return kinds


def reach_the_handler(case: Case[Any], student: Student, students: Students) -> None:
    """Make valid input one the handler acts on, rather than refuses: random ids and credentials would
    only ever be 404s and 401s, and an unsigned webhook a 400."""
    if "watch_id" in case.path_parameters:
        case.path_parameters["watch_id"] = student.watch_id
    if "student_id" in case.path_parameters:
        case.path_parameters["student_id"] = students.new().user_id
    if isinstance(case.body, dict):
        # The document's example account is the student's.
        if case.body.get("email") in (EMAIL_SCHEMA.examples or []):
            case.body["email"] = student.email
        if case.body.get("password") in (PASSWORD_SCHEMA.examples or []):
            case.body["password"] = PASSWORD
    if case.path == "/api/v1/webhooks/resend":
        # Sent as these bytes, so that the signature is over what arrives.
        body = json.dumps(case.body).encode()
        case.body = body
        case.headers.update(signed_headers(WEBHOOK_SECRET, body))


def server_error(kind: str, cases: st.SearchStrategy[Case[Any]], students: Students) -> str | None:
    """The smallest input found that makes the operation answer 5xx, or None."""
    found: list[str] = []

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Case[Any]) -> None:
        student = students.new(admin=case.path.startswith("/api/v1/admin/"))
        if kind != "negative":
            reach_the_handler(case, student, students)
        if case.path.startswith("/api/v1/auth/"):
            students.clear_throttles()
        response = case.call(cookies={COOKIE: student.session}, timeout=CALL_TIMEOUT)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception:
            # Hypothesis replays the smallest failing input last: that one is reported.
            found.append(f"{response.status_code} {case.as_curl_command()}")
            raise

    try:
        call()
    except Unsatisfiable:
        return None  # no input of this kind exists (no invalid one for an operation without parameters)
    except Exception:
        return found[-1] if found else "failed without an answer"
    return None


def test_no_operation_answers_with_a_server_error(gateway: Litestar, students: Students) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", gateway)
    assert schema.raw_schema["info"]["title"] == "PickMyClass"
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), (
            f"the document has an operation schemathesis cannot read: {result.err()}"
        )
        operations.append(result.ok())
    labels = {operation.label for operation in operations}
    # The document covers the API (a sample of what must be there).
    assert {
        "GET /api/v1/watches",
        "POST /api/v1/watches",
        "POST /api/v1/watches/bulk",
        "GET /api/v1/watches/{watch_id}/history",
        "GET /api/v1/sections/{term}/{class_nbr}",
        "GET /api/v1/terms",
        "GET /api/v1/events",
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/login",
        "DELETE /api/v1/me",
        "POST /api/v1/webhooks/resend",
    } <= labels
    # The pages behind email links are not API.
    assert not {"GET /unsubscribe", "POST /unsubscribe", "POST /resubscribe", "POST /stop-watching"} & labels
    # Handlers read their bodies themselves (services/gateway/bodies.py): unless the document says what a
    # body holds, schemathesis sends none, and only ever meets the 415s and 422s in front of the handler.
    undocumented = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method, operation in item.items()
        if method in ("post", "patch") and "requestBody" not in operation
    }
    assert undocumented == set()
    errors = [
        f"{operation.label} ({kind}): {problem}"
        for operation in operations
        for kind, cases in inputs(schema, operation).items()
        if (problem := server_error(kind, cases, students)) is not None
    ]
    assert errors == [], "\n".join(errors)
