"""Fixtures on real servers. Each test gets its own namespace (streams, subjects, consumers, Redis keys);
the session gets its own database. So tests pass while `make run` is up on the same servers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import asyncpg
import pytest
import redis.asyncio as redis
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.db import create_pool, ensure_database, migrate, with_database
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings
from shared.streams import Topology, declare
from tests.infra import Servers, find_servers

TEST_SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session", autouse=True)
def plain_logs() -> None:
    """The services' own logging setup: exceptions as plain tracebacks. structlog's unconfigured default
    renders tracebacks with local variables, which would print settings secrets into test output."""
    configure_logging(Settings(), "tests")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening) for the duration of a test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="session")
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def say(line: str) -> None:
        # Shown as it happens: starting embedded servers takes seconds the first time.
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"pickmyclass tests: {line}")

    with ExitStack() as stack:
        try:
            found = find_servers(stack, say)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield found


@pytest.fixture(scope="session")
async def database_url(servers: Servers) -> AsyncIterator[str]:
    name = f"pmc_test_{uuid.uuid4().hex[:10]}"
    url = with_database(servers.database_url, name)
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def db(db_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The session database, emptied before the test (every table the migrations made, but their record)."""
    tables = await db_pool.fetch(
        "SELECT quote_ident(tablename) AS name FROM pg_tables"
        " WHERE schemaname = 'public' AND tablename <> 'schema_migration'"
    )
    await db_pool.execute(f"TRUNCATE {', '.join(row['name'] for row in tables)} RESTART IDENTITY CASCADE")
    return db_pool


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(servers: Servers, database_url: str, namespace: str) -> Settings:
    return Settings(
        nats_url=servers.nats_url,
        database_url=database_url,
        redis_url=servers.redis_url,
        namespace=namespace,
        secret_key=TEST_SECRET,
        check_interval_seconds=60,
        email_backend="outbox",
        site_url="http://pickmyclass.test",
    )


@pytest.fixture
def topology(settings: Settings) -> Topology:
    return Topology(settings.namespace, settings.check_interval_seconds)


@pytest.fixture
async def nc(servers: Servers) -> AsyncIterator[Client]:
    client = await connect_nats(servers.nats_url, "pmc-tests")
    yield client
    await client.close()


@pytest.fixture
async def js(nc: Client, topology: Topology) -> AsyncIterator[JetStreamContext]:
    """JetStream with this test's streams and consumers declared, deleted afterwards."""
    context = nc.jetstream()
    await declare(context, topology)
    yield context
    for stream in topology.streams:
        await context.delete_stream(stream.name)


@pytest.fixture
async def redis_client(servers: Servers) -> AsyncIterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()
