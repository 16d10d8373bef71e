"""Live section updates over Server-Sent Events.

One core-NATS subscription per gateway process (on the namespace's `live.>`) fans out to a bounded queue
per open stream. A stream only gets the sections its user watches; a `WatchesChanged` for its user makes it
reload that set and tell the page to reload its list. A stream whose queue overflows is closed rather than
buffered without bound: the browser's EventSource reconnects and the page reloads the whole list.

A stream lives only as long as the session it was opened with:
- log-out, a password reset and "log out everywhere" publish a revocation on `<ns>.live.revoke.<kind>.<id>`
  (kind `session`, by `sessions.session_ref`; `user`; or `stream`), which every gateway process receives
  on the same subscription and which ends the matching streams at once;
- every `ping_interval` each stream checks that its session still holds (idle and absolute expiry, and any
  revocation whose message was lost), and ends when it does not.

Limits: SSE_MAX_CONNECTIONS streams per process (beyond: 503 with Retry-After), SSE_MAX_PER_USER per
student across every process (a Redis sorted set per student, by opening time: a new stream closes the
oldest). Each stream keeps a key alive in Redis while it runs, so streams of a process that died stop
counting once their key expires.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal, TypeVar

import asyncpg
import msgspec
import structlog
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.sections import live_event
from services.gateway.sessions import session_alive, session_id_of, session_ref
from shared.events import SectionLive, WatchesChanged, decode
from shared.metrics import SSE_CONNECTIONS
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

SELECT_WATCHED_SECTIONS = "SELECT term, class_nbr FROM watch WHERE user_id = $1"

SectionKey = tuple[str, str]
KeyT = TypeVar("KeyT")
ItemKind = Literal["section", "watches", "close"]
LiveItem = tuple[ItemKind, bytes]
RevokeKind = Literal["session", "user", "stream"]

_CLOSE: LiveItem = ("close", b"")
_WATCHES: LiveItem = ("watches", b"")
# A full process asks the browser to come back after this long (EventSource retries on its own too).
BUSY_RETRY_SECONDS = 10


def revoke_prefix(topology: Topology) -> str:
    return topology.live_wildcard.removesuffix(">") + "revoke."


def revoke_subject(topology: Topology, kind: RevokeKind, ident: str) -> str:
    return f"{revoke_prefix(topology)}{kind}.{ident}"


async def revoke(nc: Client, topology: Topology, kind: RevokeKind, ident: str) -> None:
    """End the live streams of a session (`sessions.session_ref`), a user or one stream, in every gateway
    process. Best effort: when NATS is away the streams still end at their next session check."""
    try:
        await nc.publish(revoke_subject(topology, kind, ident), b"")
    except NatsError as exc:
        log.warning("live stream revocation not published", kind=kind, error=str(exc))


class LiveStream:
    """One open SSE connection: its user, session, the sections it is interested in, its pending
    messages."""

    def __init__(self, user_id: int, queue_size: int, session: str = "", stream_id: str = "") -> None:
        self.user_id = user_id
        self.session = session
        self.stream_id = stream_id or secrets.token_hex(16)
        self.sections: frozenset[SectionKey] = frozenset()
        self.queue: asyncio.Queue[LiveItem] = asyncio.Queue(maxsize=queue_size)


class LiveHub:
    def __init__(self, topology: Topology, *, ping_interval: float = 15.0, queue_size: int = 100) -> None:
        self.topology = topology
        self.ping_interval = ping_interval
        self.queue_size = queue_size
        self._by_section: defaultdict[SectionKey, set[LiveStream]] = defaultdict(set)
        self._by_user: defaultdict[int, set[LiveStream]] = defaultdict(set)
        self._by_session: defaultdict[str, set[LiveStream]] = defaultdict(set)
        self._by_id: dict[str, LiveStream] = {}
        self._subscription: Subscription | None = None
        self._section_prefix = topology.live_section_subject("", "").removesuffix(".")
        self._user_prefix = topology.live_user_subject(0).removesuffix("0")
        self._revoke_prefix = revoke_prefix(topology)
        self._chores: set[asyncio.Task[None]] = set()

    async def start(self, nc: Client) -> None:
        self._subscription = await nc.subscribe(self.topology.live_wildcard, cb=self._on_message)
        # The server knows of the subscription once flush returns: nothing published after that is missed.
        await nc.flush()

    async def stop(self) -> None:
        self.close_streams()
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)

    @property
    def stream_count(self) -> int:
        return len(self._by_id)

    @property
    def alive_ms(self) -> int:
        """How long a stream's key in Redis outlives its last check: three missed checks."""
        return int(max(3 * self.ping_interval, 1.0) * 1000)

    def open(
        self,
        user_id: int,
        sections: frozenset[SectionKey],
        *,
        session: str = "",
        stream_id: str = "",
    ) -> LiveStream:
        stream = LiveStream(user_id, self.queue_size, session, stream_id)
        self._by_user[user_id].add(stream)
        self._by_session[session].add(stream)
        self._by_id[stream.stream_id] = stream
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
        if self._by_id.get(stream.stream_id) is not stream:
            return
        self.set_sections(stream, frozenset())
        self._discard(self._by_user, stream.user_id, stream)
        self._discard(self._by_session, stream.session, stream)
        del self._by_id[stream.stream_id]
        SSE_CONNECTIONS.dec()

    def close_streams(self) -> None:
        """End every open stream, e.g. at shutdown, so the server need not wait for the clients."""
        for stream in list(self._by_id.values()):
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
            elif subject.startswith(self._revoke_prefix):
                self._revoke(subject.removeprefix(self._revoke_prefix))
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            log.warning("live message dropped", subject=subject, error=str(exc))

    def _revoke(self, what: str) -> None:
        kind, _, ident = what.partition(".")
        if kind == "session":
            targets = list(self._by_session.get(ident, set()))
        elif kind == "user" and ident.isdigit():
            targets = list(self._by_user.get(int(ident), set()))
        elif kind == "stream" and ident in self._by_id:
            targets = [self._by_id[ident]]
        else:
            targets = []
        for stream in targets:
            log.info("live stream revoked", user_id=stream.user_id, by=kind)
            self._end(stream)

    def spawn(self, chore: Coroutine[Any, Any, None]) -> None:
        """Run a clean-up after the request that needed it is gone (kept, so it is not collected)."""
        task = asyncio.get_running_loop().create_task(chore)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

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


def user_streams_key(namespace: str, user_id: int) -> str:
    return f"{namespace}:live-streams:{user_id}"


def stream_alive_key(namespace: str, stream_id: str) -> str:
    return f"{namespace}:live-stream:{stream_id}"


# Adds a stream to its user's set (scored by opening time), forgets members whose alive key expired (their
# process died), and evicts the oldest beyond the cap; returns the evicted ids.
_REGISTER = """
redis.call('SET', ARGV[4] .. ARGV[2], '1', 'PX', ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[4] .. id) == 0 then
        redis.call('ZREM', KEYS[1], id)
    end
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
local evicted = {}
if excess > 0 then
    evicted = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
    for _, id in ipairs(evicted) do
        redis.call('ZREM', KEYS[1], id)
        redis.call('DEL', ARGV[4] .. id)
    end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return evicted
"""


async def register_stream(
    redis: Redis, namespace: str, user_id: int, stream_id: str, max_per_user: int, alive_ms: int
) -> list[str]:
    """Count a new stream of `user_id` fleet-wide; the ids of the streams it displaces (oldest first)."""
    evicted = await redis.eval(
        _REGISTER,
        1,
        user_streams_key(namespace, user_id),
        int(time.time() * 1000),
        stream_id,
        max_per_user,
        stream_alive_key(namespace, ""),
        alive_ms,
        # The set outlives its newest member's key, then goes by itself.
        alive_ms * 2,
    )
    return [item.decode() if isinstance(item, bytes) else str(item) for item in evicted]


async def forget_stream(redis: Redis, namespace: str, user_id: int, stream_id: str) -> None:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(user_streams_key(namespace, user_id), stream_id)
            pipe.delete(stream_alive_key(namespace, stream_id))
            await pipe.execute()
    except RedisError as exc:
        # Its key expires on its own; until then the stream counts against the user's cap.
        log.warning("closed live stream not forgotten", error=str(exc))


async def still_live(redis: Redis, settings: Settings, session_id: str, stream: LiveStream, ms: int) -> bool:
    """Whether the stream may go on: its session holds and it was not displaced (its alive key is there,
    and is extended). A Redis that does not answer ends it: the browser reconnects and is told why."""
    try:
        if not await session_alive(redis, settings, session_id):
            return False
        key = stream_alive_key(settings.namespace, stream.stream_id)
        return bool(await redis.set(key, b"1", px=ms, xx=True))
    except RedisError as exc:
        log.warning("live stream check failed", error=str(exc))
        return False


async def watched_sections(pool: asyncpg.Pool, user_id: int) -> frozenset[SectionKey]:
    return frozenset(
        (row["term"], row["class_nbr"]) for row in await pool.fetch(SELECT_WATCHED_SECTIONS, user_id)
    )


async def stream_events(
    hub: LiveHub,
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    *,
    user_id: int,
    sections: frozenset[SectionKey],
    session_id: str,
    stream_id: str,
) -> AsyncIterator[ServerSentEventMessage]:
    # Opened here, not in the handler: a response that is never sent never starts this generator, and so
    # leaves nothing behind in the hub (its key in Redis expires on its own).
    stream = hub.open(user_id, sections, session=session_ref(session_id), stream_id=stream_id)
    log.info("live stream opened", user_id=user_id, streams=hub.stream_count)
    loop = asyncio.get_running_loop()
    try:
        yield ServerSentEventMessage(event="ready", data="{}")
        next_check = loop.time() + hub.ping_interval
        while True:
            wait = next_check - loop.time()
            if wait <= 0:
                if not await still_live(redis, settings, session_id, stream, hub.alive_ms):
                    log.info("live stream ended: session over or stream displaced", user_id=user_id)
                    return
                yield ServerSentEventMessage(comment="ping", data=None)
                next_check = loop.time() + hub.ping_interval
                continue
            try:
                kind, payload = await asyncio.wait_for(stream.queue.get(), timeout=wait)
            except TimeoutError:
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
        # so the cleanup cannot be interrupted half-way; Redis is told by a task of its own.
        hub.close(stream)
        hub.spawn(forget_stream(redis, settings.namespace, user_id, stream.stream_id))
        log.info("live stream closed", user_id=user_id, streams=hub.stream_count)


@get("/api/v1/events")
async def events(
    request: Request[Any, Any, Any],
    user_id: NamedDependency[int],
    hub: NamedDependency[LiveHub],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> ServerSentEvent:
    """Live updates for the logged-in user's watches as `text/event-stream`; 401 when not logged in; 503
    with `Retry-After` when this gateway process already serves as many streams as it may.

    Events: `ready` once connected; `section` with data `{"term", "class_nbr", "found", "checked_at",
    "section"}` (`section` has the shape of a watch's section in `GET /api/v1/watches`, or null) whenever a
    watched section is checked; `watches` when the user's list of watches changed (reload it). A `: ping`
    comment keeps idle connections open. The stream ends when its session does (log-out, expiry, "log out
    everywhere", a password reset), and when the student opens more than SSE_MAX_PER_USER streams (the
    oldest ends).
    """
    session_id = session_id_of(settings, request)
    if session_id is None:  # the user_id dependency found one: only a cookie renamed in between
        raise HTTPException(status_code=401, detail="log in first")
    if hub.stream_count >= settings.sse_max_connections:
        log.warning("live stream refused: process full", streams=hub.stream_count)
        raise HTTPException(
            status_code=503,
            detail="too many live connections here: try again shortly",
            headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
        )
    sections = await watched_sections(pool, user_id)
    stream_id = secrets.token_hex(16)
    evicted = await register_stream(
        redis, settings.namespace, user_id, stream_id, settings.sse_max_per_user, hub.alive_ms
    )
    for old in evicted:
        await revoke(nc, topology, "stream", old)
    return ServerSentEvent(
        stream_events(
            hub,
            pool,
            redis,
            settings,
            user_id=user_id,
            sections=sections,
            session_id=session_id,
            stream_id=stream_id,
        )
    )
