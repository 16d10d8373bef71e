"""Live section updates over Server-Sent Events.

One core-NATS subscription per gateway process (on the namespace's `live.>`) fans out to a bounded queue
per open stream. A stream only gets the sections its user watches; a `WatchesChanged` for its user makes it
reload that set and tell the page to reload its list. A stream whose queue overflows is closed rather than
buffered without bound: the browser's EventSource reconnects and the page reloads the whole list.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Literal, TypeVar

import asyncpg
import msgspec
import structlog
from litestar import get
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.gateway.sections import live_event
from shared.events import SectionLive, WatchesChanged, decode
from shared.metrics import SSE_CONNECTIONS
from shared.streams import Topology

log = structlog.get_logger()

SELECT_WATCHED_SECTIONS = "SELECT term, class_nbr FROM watch WHERE user_id = $1"

SectionKey = tuple[str, str]
KeyT = TypeVar("KeyT")
ItemKind = Literal["section", "watches", "close"]
LiveItem = tuple[ItemKind, bytes]

_CLOSE: LiveItem = ("close", b"")
_WATCHES: LiveItem = ("watches", b"")


class LiveStream:
    """One open SSE connection: its user, the sections it is interested in, its pending messages."""

    def __init__(self, user_id: int, queue_size: int) -> None:
        self.user_id = user_id
        self.sections: frozenset[SectionKey] = frozenset()
        self.queue: asyncio.Queue[LiveItem] = asyncio.Queue(maxsize=queue_size)


class LiveHub:
    def __init__(self, topology: Topology, *, ping_interval: float = 15.0, queue_size: int = 100) -> None:
        self.topology = topology
        self.ping_interval = ping_interval
        self.queue_size = queue_size
        self._by_section: defaultdict[SectionKey, set[LiveStream]] = defaultdict(set)
        self._by_user: defaultdict[int, set[LiveStream]] = defaultdict(set)
        self._subscription: Subscription | None = None
        self._section_prefix = topology.live_section_subject("", "").removesuffix(".")
        self._user_prefix = topology.live_user_subject(0).removesuffix("0")

    async def start(self, nc: Client) -> None:
        self._subscription = await nc.subscribe(self.topology.live_wildcard, cb=self._on_message)
        # The server knows of the subscription once flush returns: nothing published after that is missed.
        await nc.flush()

    async def stop(self) -> None:
        self.close_streams()
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    @property
    def stream_count(self) -> int:
        return sum(len(streams) for streams in self._by_user.values())

    def open(self, user_id: int, sections: frozenset[SectionKey]) -> LiveStream:
        stream = LiveStream(user_id, self.queue_size)
        self._by_user[user_id].add(stream)
        SSE_CONNECTIONS.inc()
        self.set_sections(stream, sections)
        return stream

    def set_sections(self, stream: LiveStream, sections: frozenset[SectionKey]) -> None:
        for key in stream.sections - sections:
            self._discard(self._by_section, key, stream)
        for key in sections - stream.sections:
            self._by_section[key].add(stream)
        stream.sections = sections

    def close(self, stream: LiveStream) -> None:
        """Forget a stream (synchronous, so it completes even inside a cancelled scope); closing it again
        does nothing."""
        if stream not in self._by_user.get(stream.user_id, set()):
            return
        self.set_sections(stream, frozenset())
        self._discard(self._by_user, stream.user_id, stream)
        SSE_CONNECTIONS.dec()

    def close_streams(self) -> None:
        """End every open stream, e.g. at shutdown, so the server need not wait for the clients."""
        for streams in list(self._by_user.values()):
            for stream in list(streams):
                self._end(stream)

    def dispatch(self, subject: str, data: bytes) -> None:
        """Route one message from `live.>` to the streams that want it."""
        try:
            if subject.startswith(self._section_prefix):
                live = decode(data, SectionLive)
                targets = self._by_section.get((live.term, live.class_nbr), set())
                if targets:
                    payload = msgspec.json.encode(live_event(live))
                    for stream in list(targets):
                        self._offer(stream, ("section", payload))
            elif subject.startswith(self._user_prefix):
                changed = decode(data, WatchesChanged)
                for stream in list(self._by_user.get(changed.user_id, set())):
                    self._offer(stream, _WATCHES)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            log.warning("live message dropped", subject=subject, error=str(exc))

    async def _on_message(self, msg: Msg) -> None:
        self.dispatch(msg.subject, msg.data)

    def _offer(self, stream: LiveStream, item: LiveItem) -> None:
        try:
            stream.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("live stream too slow, closing it", user_id=stream.user_id)
            self._end(stream)

    def _end(self, stream: LiveStream) -> None:
        self.close(stream)
        while not stream.queue.empty():
            stream.queue.get_nowait()
        stream.queue.put_nowait(_CLOSE)

    @staticmethod
    def _discard(index: defaultdict[KeyT, set[LiveStream]], key: KeyT, stream: LiveStream) -> None:
        streams = index.get(key)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del index[key]


async def watched_sections(pool: asyncpg.Pool, user_id: int) -> frozenset[SectionKey]:
    return frozenset(
        (row["term"], row["class_nbr"]) for row in await pool.fetch(SELECT_WATCHED_SECTIONS, user_id)
    )


async def stream_events(
    hub: LiveHub, pool: asyncpg.Pool, user_id: int
) -> AsyncIterator[ServerSentEventMessage]:
    stream = hub.open(user_id, await watched_sections(pool, user_id))
    log.info("live stream opened", user_id=user_id, streams=hub.stream_count)
    try:
        yield ServerSentEventMessage(event="ready", data="{}")
        while True:
            try:
                kind, payload = await asyncio.wait_for(stream.queue.get(), timeout=hub.ping_interval)
            except TimeoutError:
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            if kind == "close":
                return
            if kind == "watches":
                hub.set_sections(stream, await watched_sections(pool, user_id))
                yield ServerSentEventMessage(event="watches", data="{}")
            else:
                yield ServerSentEventMessage(event="section", data=payload.decode())
    finally:
        # Runs in a cancelled scope when the client goes away (litestar#3772): nothing here may await,
        # so the cleanup cannot be interrupted half-way.
        hub.close(stream)
        log.info("live stream closed", user_id=user_id, streams=hub.stream_count)


@get("/api/v1/events")
async def events(
    user_id: NamedDependency[int], hub: NamedDependency[LiveHub], pool: NamedDependency[asyncpg.Pool]
) -> ServerSentEvent:
    """Live updates for the logged-in user's watches as `text/event-stream`; 401 when not logged in.

    Events: `ready` once connected; `section` with data `{"term", "class_nbr", "found", "checked_at",
    "section"}` (`section` has the shape of a watch's section in `GET /api/v1/watches`, or null) whenever a
    watched section is checked; `watches` when the user's list of watches changed (reload it). A `: ping`
    comment keeps idle connections open.
    """
    return ServerSentEvent(stream_events(hub, pool, user_id))
