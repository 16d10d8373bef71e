"""The gateway under abuse, on real servers: look-alike addresses, lock-outs, throttles behind a proxy, live
streams after log-out, pool exhaustion and dependencies going away, hostile input, sessions, headers,
password hashes.

Where a client's network address or a second gateway process matters, the gateway runs as
`python -m services.gateway`, configured like production by environment variables; saturation and
outages are made with a TCP proxy between the gateway and PostgreSQL or Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as redis
import uvicorn
from httpx_sse import aconnect_sse
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from services.gateway import passwords
from services.gateway.app import close_live_streams, create_app
from services.gateway.sessions import MAX_SESSION_SECONDS, SECURE_COOKIE, session_key, user_sessions_key
from shared.settings import Settings
from shared.streams import Topology
from tests.accounts import PASSWORD, account_emails, link_path, sign_up
from tests.integration.test_gateway import forget_keys

Client = AsyncTestClient[Litestar]
TIMEOUT = 10.0
WRONG = "not the password"


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
    await forget_keys(redis_client, settings.namespace)


async def log_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **kw: str
) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password}, headers=kw)


async def poll(check: Callable[[], Awaitable[bool]], within: float = TIMEOUT) -> None:
    """Wait for another process's state (a background task, a subprocess): poll with a deadline."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def gateway_process(settings: Settings, **env: str) -> AsyncIterator[str]:
    """`python -m services.gateway` on a free port with `settings` (and `env` on top); its base URL."""
    port = free_port()
    environ = {
        **os.environ,
        "NATS_URL": settings.nats_url,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "NAMESPACE": settings.namespace,
        "SECRET_KEY": settings.secret_key,
        "EMAIL_BACKEND": "outbox",
        "SITE_URL": settings.site_url,
        "CHECK_INTERVAL_SECONDS": str(settings.check_interval_seconds),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "LOG_LEVEL": "warning",
        **env,
    }
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.gateway", env=environ, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=1.0) as probe:

                async def up() -> bool:
                    if process.returncode is not None:
                        log.seek(0)
                        raise AssertionError(f"gateway exited: {log.read().decode()[-2000:]}")
                    try:
                        return (await probe.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await poll(up, within=20.0)
            yield url
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), TIMEOUT)


@contextlib.asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[str]:
    """`app` served by uvicorn in this process on a real socket (SSE streams need one)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        close_live_streams(app)
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


class Proxy:
    """A TCP proxy in front of a server: counts connections, can slow every chunk, can cut everything."""

    def __init__(self, url: str, delay: float = 0.0) -> None:
        parts = urlsplit(url)
        self._url = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self.delay = delay
        self.open = 0
        self.peak = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        netloc = f"{self._url.username}@127.0.0.1:{port}" if self._url.username else f"127.0.0.1:{port}"
        return urlunsplit(self._url._replace(netloc=netloc))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            self.open -= 1
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.open -= 1
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        """The server goes away: open connections drop, new ones are refused."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()


# 1. Look-alike addresses


async def test_a_look_alike_address_does_not_open_a_locked_account(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "vicki@asu.edu")
    client.cookies.clear()
    statuses = [(await log_in(client, "vicki@asu.edu", WRONG)).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    # U+0130 lower-cases to "i" in PostgreSQL, to "i" + U+0307 in Python: it must be neither a way in nor
    # a way around the lock.
    for look_alike in ("v\u0130cki@asu.edu", "V\u0130CKI@asu.edu"):
        assert (await log_in(client, look_alike)).status_code in (401, 429)
    # Case and compatibility forms are the same account, and so the same lock.
    for same in ("VICKI@ASU.EDU", "\uff56icki@asu.edu"):
        assert (await log_in(client, same)).status_code == 429
    refused = await client.post(
        "/api/v1/auth/register", json={"email": "v\u0130cki@asu.edu", "password": PASSWORD}
    )
    assert refused.status_code == 422


async def test_addresses_that_fold_together_are_one_account(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "Straße@uni.de")
    client.cookies.clear()
    again = await client.post("/api/v1/auth/register", json={"email": "STRASSE@uni.de", "password": PASSWORD})
    assert again.status_code == 202
    await poll(lambda: _has_notice(js, topology))
    rows = await db.fetch("SELECT email, email_canonical FROM app_user")
    assert [(row["email"], row["email_canonical"]) for row in rows] == [("Straße@uni.de", "strasse@uni.de")]
    assert (await log_in(client, "strasse@UNI.de")).status_code == 200


async def _has_notice(js: JetStreamContext, topology: Topology) -> bool:
    return any(event.kind == "already_registered" for event in await account_emails(js, topology))


# 2. Throttles instead of a lock anyone can set


async def test_one_network_cannot_try_many_accounts(client: Client) -> None:
    statuses = [(await log_in(client, f"student{n}@asu.edu", WRONG)).status_code for n in range(25)]
    assert statuses == [401] * 20 + [429] * 5
    refused = await log_in(client, "student99@asu.edu", WRONG)
    assert refused.json() == {"detail": "too many log-in attempts from your network: try again in a minute"}
    assert 0 < int(refused.headers["retry-after"]) <= 60


async def test_a_stranger_cannot_lock_a_student_out_behind_a_trusted_proxy(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, redis_client: redis.Redis
) -> None:
    stranger, student = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.7"}
    async with (
        gateway_process(settings, TRUSTED_PROXIES="127.0.0.1") as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http,
    ):
        await sign_up(http, js, topology, settings, "sparky@asu.edu")
        http.cookies.clear()
        guesses = [(await log_in(http, "sparky@asu.edu", WRONG, **stranger)).status_code for _ in range(6)]
        assert guesses == [401] * 5 + [429]
        assert (await log_in(http, "sparky@asu.edu", **stranger)).status_code == 429, "the guesser is slowed"
        assert (await log_in(http, "sparky@asu.edu", **student)).status_code == 200, "the student is not"
    await forget_keys(redis_client, settings.namespace)


async def test_forwarded_addresses_from_untrusted_peers_are_ignored(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> None:
    async with (
        gateway_process(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http,
    ):
        statuses = [
            (await log_in(http, f"s{n}@asu.edu", WRONG, **{"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(21)
        ]
    assert statuses == [401] * 20 + [429], "one peer, however many addresses it claims"
    await forget_keys(redis_client, settings.namespace)


# 3. Live streams end with their session


async def next_event_name(events: AsyncIterator[object]) -> str:
    event = await asyncio.wait_for(anext(events), TIMEOUT)
    return str(getattr(event, "event", ""))


async def assert_ends(events: AsyncIterator[object], within: float) -> None:
    """The stream ends within `within` seconds (pings and events before that are fine)."""
    async with asyncio.timeout(within):
        with contextlib.suppress(StopAsyncIteration, httpx.RemoteProtocolError):
            while True:
                await anext(events)


async def test_log_out_in_one_process_ends_the_stream_in_another(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, redis_client: redis.Redis
) -> None:
    async with (
        gateway_process(settings) as first,
        gateway_process(settings) as second,
        httpx.AsyncClient(base_url=first, timeout=TIMEOUT) as browser,
    ):
        await sign_up(browser, js, topology, settings, "sparky@asu.edu")
        async with (
            httpx.AsyncClient(base_url=second, timeout=TIMEOUT, cookies=browser.cookies) as tab,
            aconnect_sse(tab, "GET", "/api/v1/events") as source,
        ):
            events = source.aiter_sse()
            assert await next_event_name(events) == "ready"
            started = time.monotonic()
            assert (await browser.post("/api/v1/auth/logout", json={})).status_code == 204
            # The stream's own check runs every 15 s in these processes: ending sooner is the revocation.
            await assert_ends(events, within=5.0)
            assert time.monotonic() - started < 5.0
    await forget_keys(redis_client, settings.namespace)


@pytest.fixture
async def live_url(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[Callable[..., contextlib.AbstractAsyncContextManager[str]]]:
    @contextlib.asynccontextmanager
    async def serve(ping_interval: float = 30.0, **changes: int) -> AsyncIterator[str]:
        app = create_app(msgspec.structs.replace(settings, **changes), ping_interval=ping_interval)
        async with served(app) as url:
            yield url

    yield serve
    await forget_keys(redis_client, settings.namespace)


async def test_log_out_everywhere_ends_every_session_and_stream(
    live_url: Callable[..., contextlib.AbstractAsyncContextManager[str]],
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
) -> None:
    async with (
        live_url() as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as laptop,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as phone,
    ):
        await sign_up(laptop, js, topology, settings, "sparky@asu.edu")
        assert (await log_in(phone, "sparky@asu.edu")).status_code == 200
        async with (
            aconnect_sse(laptop, "GET", "/api/v1/events") as laptop_source,
            aconnect_sse(phone, "GET", "/api/v1/events") as phone_source,
        ):
            laptop_events, phone_events = laptop_source.aiter_sse(), phone_source.aiter_sse()
            assert await next_event_name(laptop_events) == await next_event_name(phone_events) == "ready"
            done = await phone.post("/api/v1/auth/logout-everywhere", json={})
            assert done.status_code == 204
            await assert_ends(laptop_events, within=5.0)
            await assert_ends(phone_events, within=5.0)
        for device in (laptop, phone):
            assert (await device.get("/api/v1/auth/me")).status_code == 401
        assert (await laptop.post("/api/v1/auth/logout-everywhere", json={})).status_code == 401


async def test_a_password_reset_ends_the_streams(
    live_url: Callable[..., contextlib.AbstractAsyncContextManager[str]],
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
) -> None:
    async with live_url() as url, httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as browser:
        await sign_up(browser, js, topology, settings, "sparky@asu.edu")
        async with aconnect_sse(browser, "GET", "/api/v1/events") as source:
            events = source.aiter_sse()
            assert await next_event_name(events) == "ready"
            await browser.post("/api/v1/auth/password/forgot", json={"email": "sparky@asu.edu"})
            await poll(lambda: _has_reset(js, topology))
            [reset] = [e for e in await account_emails(js, topology) if e.kind == "reset"]
            token = link_path(settings, reset).split("token=")[1]
            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as elsewhere:
                done = await elsewhere.post(
                    "/api/v1/auth/password/reset", json={"token": token, "password": "a new passphrase"}
                )
            assert done.status_code == 204
            await assert_ends(events, within=5.0)


async def _has_reset(js: JetStreamContext, topology: Topology) -> bool:
    return any(event.kind == "reset" for event in await account_emails(js, topology))


async def test_a_stream_ends_when_its_session_expires(
    live_url: Callable[..., contextlib.AbstractAsyncContextManager[str]],
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    async with (
        live_url(ping_interval=0.2) as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as browser,
    ):
        user_id = await sign_up(browser, js, topology, settings, "sparky@asu.edu")
        async with aconnect_sse(browser, "GET", "/api/v1/events") as source:
            events = source.aiter_sse()
            assert await next_event_name(events) == "ready"
            # As an idle session ends: its key expires, and nobody publishes anything.
            [session_id] = await redis_client.smembers(user_sessions_key(settings.namespace, user_id))
            await redis_client.delete(session_key(settings.namespace, text(session_id)))
            await assert_ends(events, within=5.0)


async def test_streams_are_capped_per_student_and_per_process(
    live_url: Callable[..., contextlib.AbstractAsyncContextManager[str]],
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
) -> None:
    async with (
        live_url(sse_max_per_user=2, sse_max_connections=3) as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as alice,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as bob,
    ):
        await sign_up(alice, js, topology, settings, "alice@asu.edu")
        await sign_up(bob, js, topology, settings, "bob@asu.edu")
        async with contextlib.AsyncExitStack() as stack:
            # Iterators are kept: one dropped is closed, and its stream with it.
            streams = []
            for student in (alice, alice, alice, bob):
                source = await stack.enter_async_context(aconnect_sse(student, "GET", "/api/v1/events"))
                streams.append(source.aiter_sse())
                assert await next_event_name(streams[-1]) == "ready"
                if len(streams) == 3:
                    await assert_ends(streams[0], within=5.0)  # the oldest made room
            # Alice's two and Bob's one: the process is full.
            full = await bob.get("/api/v1/events")
            assert full.status_code == 503
            assert int(full.headers["retry-after"]) > 0


# 4. Pools and dependencies: 503 with Retry-After, never 500


@contextlib.asynccontextmanager
async def behind_proxy(
    settings: Settings, field: str, delay: float = 0.0, **changes: float
) -> AsyncIterator[tuple[Proxy, str]]:
    """A gateway served in this process, reaching PostgreSQL or Redis (`field`) through a proxy. The test's
    client, the gateway and the proxy share this loop, so requests really are concurrent."""
    proxy = Proxy(getattr(settings, field), delay)
    changed = msgspec.structs.replace(settings, **{field: await proxy.start()}, **changes)
    try:
        async with served(create_app(changed)) as url:
            yield proxy, url
    finally:
        await proxy.aclose()


async def burst(url: str, client: httpx.AsyncClient, path: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=url,
        timeout=30.0,
        cookies=client.cookies,
        limits=httpx.Limits(max_connections=count, max_keepalive_connections=count),
    ) as many:
        return await asyncio.gather(*(many.get(path) for _ in range(count)))


def assert_only_ok_or_busy(responses: list[httpx.Response]) -> Counter[int]:
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0
            assert response.json() == {"detail": "the service is busy: try again in a few seconds"}
    return statuses


async def test_a_burst_beyond_the_redis_pool_is_503_with_retry_after_never_500(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, redis_client: redis.Redis
) -> None:
    async with (
        behind_proxy(settings, "redis_url", 0.01, redis_max_connections=2, pool_wait_seconds=0.2) as (
            proxy,
            url,
        ),
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
    ):
        await sign_up(client, js, topology, settings, "sparky@asu.edu")
        statuses = assert_only_ok_or_busy(await burst(url, client, "/api/v1/auth/me", 300))
    await forget_keys(redis_client, settings.namespace)
    assert statuses[200] > 0, statuses
    assert statuses[503] > 0, statuses
    assert proxy.peak <= 2, "never more connections than REDIS_MAX_CONNECTIONS"


async def test_a_burst_beyond_the_database_pool_is_503_never_500(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, redis_client: redis.Redis
) -> None:
    async with (
        behind_proxy(settings, "database_url", 0.01, database_pool_size=2, pool_wait_seconds=0.2) as (
            proxy,
            url,
        ),
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
    ):
        await sign_up(client, js, topology, settings, "sparky@asu.edu")
        statuses = assert_only_ok_or_busy(await burst(url, client, "/api/v1/watches", 300))
    await forget_keys(redis_client, settings.namespace)
    assert statuses[200] > 0, statuses
    assert statuses[503] > 0, statuses
    assert proxy.peak <= 2, "never more connections than DATABASE_POOL_SIZE"


@pytest.mark.parametrize("field", ["redis_url", "database_url"])
async def test_a_dependency_that_goes_away_is_503_not_500(
    field: str,
    settings: Settings,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
) -> None:
    async with (
        behind_proxy(settings, field) as (proxy, url),
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
    ):
        await sign_up(client, js, topology, settings, "sparky@asu.edu")
        proxy.cut()
        for method, path, body in [
            ("GET", "/api/v1/watches", None),
            ("POST", "/api/v1/auth/login", {"email": "sparky@asu.edu", "password": PASSWORD}),
            ("POST", "/api/v1/watches", {"term": "2271", "class_nbr": "12345"}),
        ]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["retry-after"]) > 0
    await forget_keys(redis_client, settings.namespace)


# 5. Hostile input: 4xx with a message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"email": "a@asu.edu", "password": "correct\x00horse"},
            "password must not contain control characters",
        ),
        ({"email": "a\x00@asu.edu", "password": PASSWORD}, "email must look like name@example.edu"),
        ({"email": "a\u200d@asu.edu", "password": PASSWORD}, "email must look like name@example.edu"),
        ({"email": "v\u0456cki@asu.edu", "password": PASSWORD}, "email must look like name@example.edu"),
    ],
)
async def test_hostile_registrations_are_422_with_a_message(
    client: Client, body: dict[str, str], message: str
) -> None:
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": message}


async def test_deep_or_large_json_is_a_4xx_with_a_message(client: Client) -> None:
    deep = b'{"email": "a@asu.edu", "x": ' + b'{"a": ' * 1100 + b"1" + b"}" * 1100 + b"}"
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/password/forgot"):
        response = await client.post(path, content=deep, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {"detail": "the request body is not valid JSON"}
    large = json.dumps({"email": "a@asu.edu", "password": "x" * 17_000}).encode()
    for path in ("/api/v1/auth/register", "/api/v1/watches", "/api/v1/auth/logout"):
        response = await client.post(path, content=large, headers={"Content-Type": "application/json"})
        assert response.status_code == 413, path
        assert response.json() == {"detail": "the request body is too large (at most 16 KB)"}


async def test_ids_beyond_64_bits_are_4xx_on_every_route(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    user_id = await sign_up(client, js, topology, settings, "boss@asu.edu")
    await db.execute("UPDATE app_user SET is_admin = true WHERE id = $1", user_id)
    routes = [
        (method, route.path_format, [name for name, p in route.path_parameters.items() if p.type is int])
        for route in client.app.routes
        for method in sorted(route.methods - {"HEAD", "OPTIONS"})
    ]
    routes = [(method, path, names) for method, path, names in routes if names]
    assert routes, "the app has routes with numeric ids"
    for huge in ("9223372036854775808", "99999999999999999999999999"):
        for method, path, names in routes:
            url = path.format(**dict.fromkeys(names, huge))
            body: dict[str, str] | None = {} if method in ("POST", "PATCH", "PUT") else None
            response = await client.request(method, url, json=body)
            assert 400 <= response.status_code < 500, (method, url, response.status_code, response.text[:200])
    for query in ("limit=99999999999999999999", "limit=-1", "limit=%00"):
        response = await client.get(f"/api/v1/notifications?{query}")
        assert 400 <= response.status_code < 500, query


# 6. Sessions


async def test_logging_in_ends_the_session_the_browser_had(
    client: Client, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await sign_up(client, js, topology, settings, "sparky@asu.edu")
    old = client.cookies.get("pmc_session")
    assert (await log_in(client, "sparky@asu.edu")).status_code == 200
    new = client.cookies.get("pmc_session")
    assert old
    assert new
    assert old != new
    client.cookies.set("pmc_session", old)
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    client.cookies.set("pmc_session", new)
    assert (await client.get("/api/v1/auth/me")).status_code == 200


async def test_sessions_slide_while_used_and_end_when_idle_or_old(
    settings: Settings,
    db: asyncpg.Pool,
    js: JetStreamContext,
    topology: Topology,
    redis_client: redis.Redis,
) -> None:
    idle = msgspec.structs.replace(settings, session_idle_seconds=600)
    async with AsyncTestClient(app=create_app(idle)) as client:
        user_id = await sign_up(client, js, topology, settings, "sparky@asu.edu")
        [raw] = await redis_client.smembers(user_sessions_key(settings.namespace, user_id))
        key = session_key(settings.namespace, text(raw))
        assert 590 <= await redis_client.ttl(key) <= 600
        await redis_client.expire(key, 5)
        assert (await client.get("/api/v1/auth/me")).status_code == 200
        assert 590 <= await redis_client.ttl(key) <= 600, "each use moves the idle deadline"
        # Close to the absolute end, a use extends it only up to that end.
        await redis_client.set(key, f"{user_id}:{int(time.time()) - MAX_SESSION_SECONDS + 100}", ex=5)
        assert (await client.get("/api/v1/auth/me")).status_code == 200
        assert 90 <= await redis_client.ttl(key) <= 100
        await redis_client.set(key, f"{user_id}:{int(time.time()) - MAX_SESSION_SECONDS - 1}", ex=600)
        assert (await client.get("/api/v1/auth/me")).status_code == 401, (
            "30 days after log-in, whatever its use"
        )
        assert await redis_client.exists(key) == 0
    await forget_keys(redis_client, settings.namespace)


async def test_the_cookie_is_host_prefixed_and_secure_on_https(
    settings: Settings, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, redis_client: redis.Redis
) -> None:
    https = msgspec.structs.replace(settings, site_url="https://pickmyclass.test")
    async with AsyncTestClient(app=create_app(https), base_url="https://pickmyclass.test") as client:
        await client.post("/api/v1/auth/register", json={"email": "sparky@asu.edu", "password": PASSWORD})
        await poll(lambda: _has_verify(js, topology))
        [event] = await account_emails(js, topology)
        verified = await client.get(link_path(settings, event), follow_redirects=False)
        cookie = verified.headers["set-cookie"]
        assert cookie.startswith(f"{SECURE_COOKIE}=")
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"secure", "httponly", "path=/", "samesite=lax"} <= attributes
        assert not any(part.startswith("domain=") for part in attributes)
        assert verified.headers["strict-transport-security"].startswith("max-age=")
        assert (await client.get("/api/v1/auth/me")).status_code == 200
    await forget_keys(redis_client, settings.namespace)


async def _has_verify(js: JetStreamContext, topology: Topology) -> bool:
    return bool(await account_emails(js, topology))


async def test_a_disabled_account_cannot_log_in(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    user_id = await sign_up(client, js, topology, settings, "sparky@asu.edu")
    await db.execute("UPDATE app_user SET disabled_at = now() WHERE id = $1", user_id)
    assert (await log_in(client, "sparky@asu.edu", WRONG)).status_code == 401
    refused = await log_in(client, "sparky@asu.edu")
    assert refused.status_code == 403
    assert "disabled" in refused.json()["detail"]


# 7. Headers


async def test_every_answer_carries_the_security_headers(client: Client) -> None:
    answers = {
        "page": await client.get("/"),
        "api": await client.get("/api/v1/terms"),
        "api error": await client.get("/api/v1/watches"),
        "unknown api path": await client.get("/api/v1/nope"),
        "unknown page": await client.get("/nope"),
        "wrong method": await client.put("/api/v1/auth/login", json={}),
        "static": await client.get("/static/app.css"),
        "missing static": await client.get("/static/nope/../../../etc/passwd"),
    }
    for name, response in answers.items():
        headers = response.headers
        policy = headers["content-security-policy"]
        assert "script-src 'self';" in policy, name
        assert "unsafe-inline" not in policy, name
        assert "frame-ancestors 'none'" in policy, name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] == "no-referrer", name
        assert "strict-transport-security" not in headers, f"{name}: http here"
    for name in ("api", "api error", "unknown api path"):
        assert answers[name].headers["cache-control"] == "no-store", name


async def test_static_404s_show_no_paths(client: Client) -> None:
    for path in ("/static/nope.css", "/static/a/b/c.js", "/static/..%2f..%2fsecret"):
        response = await client.get(path)
        assert response.status_code in (400, 404), path
        # The page may link the site's own assets; it names neither what was asked nor where files live.
        assert path.rsplit("/", 1)[-1] not in response.text, path
        assert "services/gateway" not in response.text, path
        assert "no file or directory" not in response.text


async def test_pages_hold_no_inline_script_or_style(client: Client) -> None:
    page = (await client.get("/")).text
    for tag in page.split("<script")[1:]:
        assert tag.split(">", 1)[0].count("src="), "every script is a file"
    assert "<style" not in page
    assert " style=" not in page
    assert " onclick=" not in page.lower()


# 8. Password hashes


async def test_an_old_scrypt_hash_is_replaced_by_argon2id_at_log_in(
    client: Client, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    user_id = await sign_up(client, js, topology, settings, "sparky@asu.edu")
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    await db.execute("UPDATE app_user SET password_hash = $2 WHERE id = $1", user_id, legacy)
    assert (await log_in(client, "sparky@asu.edu", WRONG)).status_code == 401
    assert await db.fetchval("SELECT password_hash FROM app_user WHERE id = $1", user_id) == legacy
    assert (await log_in(client, "sparky@asu.edu")).status_code == 200

    async def rehashed() -> bool:
        stored = await db.fetchval("SELECT password_hash FROM app_user WHERE id = $1", user_id)
        return str(stored).startswith("$argon2id$")

    await poll(rehashed)
    assert (await log_in(client, "sparky@asu.edu")).status_code == 200
    stored = await db.fetchval("SELECT password_hash FROM app_user WHERE id = $1", user_id)
    assert not passwords.needs_rehash(stored)


async def test_a_string_that_is_not_utf8_is_a_400_not_a_500(client: Client) -> None:
    # msgspec raises UnicodeDecodeError, not a DecodeError, for bytes that are not UTF-8 inside a string.
    for raw in (b"\xff", b"\xed\xa0\x80"):
        body = (
            b'{"email": "a' + raw + b'@asu.edu", "password": "' + raw + b'xxxxxxxx", "token": "' + raw + b'"}'
        )
        for path in (
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/password/forgot",
            "/api/v1/auth/password/reset",
        ):
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (path, response.text)
            assert response.json() == {"detail": "the request body is not valid JSON"}
