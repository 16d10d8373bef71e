"""Live updates over SSE, read the way a browser reads them: the app served by uvicorn on a real socket."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
import uvicorn
from httpx_sse import ServerSentEvent, aconnect_sse
from litestar import Litestar
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.gateway.app import close_live_streams, create_app
from shared.events import SectionLive, SectionState, encode
from shared.settings import Settings
from shared.streams import Topology
from tests.accounts import sign_up
from tests.factories import OPEN_TERM
from tests.integration.test_gateway import forget_keys

TIMEOUT = 5.0
PING_INTERVAL = 0.2


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings, ping_interval=PING_INTERVAL)


@pytest.fixture
async def base_url(
    app: Litestar, settings: Settings, db: asyncpg.Pool, js: JetStreamContext, redis_client: redis.Redis
) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: clients may connect at once and wait in the backlog.
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{port}"
    close_live_streams(app)
    server.should_exit = True
    await asyncio.wait_for(task, TIMEOUT)
    await forget_keys(redis_client, settings.namespace)


class LoggedIn(Protocol):
    def __call__(
        self, base_url: str, email: str, watches: list[str]
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]: ...


@pytest.fixture
def logged_in(js: JetStreamContext, topology: Topology, settings: Settings) -> LoggedIn:
    """A student registered and verified through the emailed link, watching `watches`."""

    @asynccontextmanager
    async def student(base_url: str, email: str, watches: list[str]) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
            await sign_up(client, js, topology, settings, email)
            for class_nbr in watches:
                response = await client.post(
                    "/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": class_nbr}
                )
                assert response.status_code == 201, response.text
            yield client

    return student


def section_live(class_nbr: str, open_seats: int) -> SectionLive:
    state = SectionState(
        term=OPEN_TERM.code,
        class_nbr=class_nbr,
        subject="CSE",
        catalog_nbr="310",
        title="Data Structures and Algorithms",
        instructors=("Ruben Acuna",),
        enrl_cap=150,
        enrl_tot=150 - open_seats,
        open_seats=open_seats,
    )
    return SectionLive(
        checked_at=time.time(), state=state, term=OPEN_TERM.code, class_nbr=class_nbr, found=True
    )


async def next_event(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    return await asyncio.wait_for(anext(events), TIMEOUT)


async def publish(nc: NatsClient, topology: Topology, live: SectionLive) -> None:
    await nc.publish(topology.live_section_subject(live.term, live.class_nbr), encode(live))
    await nc.flush()


async def test_a_watched_section_reaches_only_its_watchers(
    base_url: str, nc: NatsClient, topology: Topology, logged_in: LoggedIn
) -> None:
    async with (
        logged_in(base_url, "alice@asu.edu", ["66445"]) as alice,
        logged_in(base_url, "bob@asu.edu", ["70001"]) as bob,
        aconnect_sse(alice, "GET", "/api/v1/events") as alice_source,
        aconnect_sse(bob, "GET", "/api/v1/events") as bob_source,
    ):
        alice_events, bob_events = alice_source.aiter_sse(), bob_source.aiter_sse()
        assert (await next_event(alice_events)).event == "ready"
        assert (await next_event(bob_events)).event == "ready"

        await publish(nc, topology, section_live("66445", open_seats=3))
        await publish(nc, topology, section_live("70001", open_seats=0))

        alice_update = await next_event(alice_events)
        assert alice_update.event == "section"
        data = json.loads(alice_update.data)
        assert (data["term"], data["class_nbr"], data["found"]) == (OPEN_TERM.code, "66445", True)
        assert data["section"]["open_seats"] == 3
        assert data["section"]["course"] == "CSE 310"
        assert data["section"]["instructor_links"][0]["name"] == "Ruben Acuna"

        # Bob's first section event is his own, published after Alice's: hers was never routed to him.
        bob_update = await next_event(bob_events)
        assert bob_update.event == "section"
        assert json.loads(bob_update.data)["class_nbr"] == "70001"


async def test_a_changed_watch_list_is_announced_and_followed(
    base_url: str, nc: NatsClient, topology: Topology, logged_in: LoggedIn
) -> None:
    async with (
        logged_in(base_url, "alice@asu.edu", []) as alice,
        aconnect_sse(alice, "GET", "/api/v1/events") as source,
    ):
        events = source.aiter_sse()
        assert (await next_event(events)).event == "ready"

        response = await alice.post("/api/v1/watches", json={"term": OPEN_TERM.code, "class_nbr": "66445"})
        assert response.status_code == 201
        assert (await next_event(events)).event == "watches"

        await publish(nc, topology, section_live("66445", open_seats=1))
        update = await next_event(events)
        assert update.event == "section"
        assert json.loads(update.data)["class_nbr"] == "66445"

        assert (await alice.delete(f"/api/v1/watches/{response.json()['id']}")).status_code == 204
        assert (await next_event(events)).event == "watches"


async def test_idle_streams_get_keep_alive_pings(base_url: str, logged_in: LoggedIn) -> None:
    async with (
        logged_in(base_url, "alice@asu.edu", []) as alice,
        alice.stream("GET", "/api/v1/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        seen: list[str] = []
        while ": ping" not in seen:
            seen.append(await asyncio.wait_for(anext(lines), TIMEOUT))
        assert "event: ready" in seen


async def test_shutdown_ends_open_streams(base_url: str, app: Litestar, logged_in: LoggedIn) -> None:
    async with (
        logged_in(base_url, "alice@asu.edu", []) as alice,
        aconnect_sse(alice, "GET", "/api/v1/events") as source,
    ):
        events = source.aiter_sse()
        assert (await next_event(events)).event == "ready"
        close_live_streams(app)
        with pytest.raises(StopAsyncIteration):
            await next_event(events)
