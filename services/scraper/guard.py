"""The guard in front of ASU's class search, one for every scraper replica: a request budget (a moving window
in Redis through the `limits` library), a fleet-wide pause after a 429, and a circuit breaker.

No well-kept asyncio circuit breaker with shared Redis state exists (pybreaker's Redis storage is synchronous
and its async path needs Tornado), so the breaker is a Lua script over one Redis hash: every decision reads
and writes the state in one atomic step, whichever replica makes it, and the rules live only in that script
(tests drive every transition against real Redis). Timestamps come from `clock()` and go into the script,
so tests cross the cool-down with a fake clock; the budget's window runs on the real clock (`limits`).

Keys, all under `{namespace}:asu:`: `guard` (hash: breaker state, 429 pause), `probes` (sorted set: the
half-open probes in flight, by admission time) and the budget's `requests/...` list.

The rules: CLOSED opens after `breaker_failures` consecutive failures (a success resets the count); OPEN
becomes HALF_OPEN `breaker_cooldown` seconds later, which admits at most `breaker_successes` probes at once;
a failed probe opens it again, `breaker_successes` probe successes close it. Outcomes of requests admitted
before (not probes) change nothing while OPEN or HALF_OPEN. A probe success counts only while its slot is
live (its token still in `probes`); a probe failure reopens in any case (the safe direction).

Redis unreachable means UNKNOWN: no request is made (fail closed).
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as redis
import structlog
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from shared.health import NotReady
from shared.metrics import (
    SOURCE_BREAKER_STATE,
    SOURCE_BREAKER_TRANSITIONS,
    SOURCE_BUDGET_WAIT_SECONDS,
    SOURCE_HOLDS,
)

log = structlog.get_logger()

# A probe whose scraper died never reports: its slot frees after this long, so half-open cannot wedge.
PROBE_TTL_SECONDS = 60.0
# While every probe slot is taken, ask again after at most this long (probes usually answer in seconds).
PROBE_BUSY_WAIT_SECONDS = 5.0
# When Redis cannot say, ask again after this long.
UNKNOWN_WAIT_SECONDS = 5.0
# A 429 without Retry-After pauses every replica this long, doubling on each consecutive 429 up to the cap;
# a Retry-After is honoured up to the same cap.
DEFAULT_HOLD_SECONDS = 60.0
MAX_HOLD_SECONDS = 900.0
# JetStream redelivers a message whose handler stays silent for its ack wait: a waiting request says
# "in progress" this often.
HEARTBEAT_SECONDS = 5.0
# A request that waited for the window goes this much after the window frees: the limiter reads the clock
# a moment before the request leaves, and these moments vary between replicas.
EDGE_MARGIN_SECONDS = 0.05
# Redis answers in milliseconds; a hung one must not hang every check.
REDIS_TIMEOUT_SECONDS = 1.0
# Waits are reported as at least this, so "wait > 0" holds after rounding.
MIN_WAIT_SECONDS = 0.01

# KEYS[1]: the guard hash; KEYS[2]: the sorted set of probes in flight (token -> admitted at).
# ARGV: op, now, breaker_failures, breaker_cooldown, breaker_successes, probe_ttl, then per op:
#   admit: token (used if admitted as a probe)
#   success: probe (0/1), token ('' when this process holds no live probe token)
#   failure: probe (0/1), token, reason
#   abandon: token
#   rate_limited: retry_after ('' for none), default pause, max pause
#   view: -
# Reply: state, failures, successes, changed_at, retry_at, reason, hold_until, after_probe, transition
# (the state this call entered, or ''), then per op: admit: verdict ('allowed', 'probe', 'open', 'hold',
# 'probes_busy'), wait; rate_limited: pause. Numbers travel as strings (Lua numbers become integers).
BREAKER_LUA = """
local op = ARGV[1]
local now = tonumber(ARGV[2])
local max_failures = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local max_successes = tonumber(ARGV[5])
local probe_ttl = tonumber(ARGV[6])

local raw = redis.call('HGETALL', KEYS[1])
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
local state = s.state or 'closed'
local failures = tonumber(s.failures or '0')
local successes = tonumber(s.successes or '0')
local changed_at = s.changed_at or ''
local retry_at = tonumber(s.retry_at or '')
local reason = s.reason or ''
local hold_until = tonumber(s.hold_until or '0')
local holds = tonumber(s.holds or '0')
local after_probe = s.after_probe or '0'
local transition = ''

local function num(x) return string.format('%.6f', x) end

local function enter(to)
    state = to
    changed_at = num(now)
    transition = to
    successes = 0
    retry_at = nil
    redis.call('DEL', KEYS[2])
    if to == 'open' then
        retry_at = now + cooldown
    elseif to == 'closed' then
        failures = 0
        after_probe = '0'
    end
end

if state == 'open' and now >= retry_at then enter('half_open') end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - probe_ttl)

local extra = {}
if op == 'admit' then
    if state == 'open' then
        extra = {'open', num(math.max(retry_at, hold_until) - now)}
    elseif hold_until > now then
        extra = {'hold', num(hold_until - now)}
    elseif state == 'half_open' then
        if redis.call('ZCARD', KEYS[2]) < max_successes then
            redis.call('ZADD', KEYS[2], now, ARGV[7])
            extra = {'probe', '0'}
        else
            local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
            extra = {'probes_busy', num(tonumber(oldest[2]) + probe_ttl - now)}
        end
    else
        extra = {'allowed', '0'}
    end
elseif op == 'success' then
    holds = 0
    local live = ARGV[8] ~= '' and redis.call('ZREM', KEYS[2], ARGV[8]) == 1
    if state == 'closed' then
        failures = 0
    elseif state == 'half_open' and ARGV[7] == '1' and live then
        successes = successes + 1
        if successes >= max_successes then enter('closed') end
    end
elseif op == 'failure' then
    if ARGV[8] ~= '' then redis.call('ZREM', KEYS[2], ARGV[8]) end
    if state == 'closed' then
        failures = failures + 1
        reason = ARGV[9]
        after_probe = '0'
        if failures >= max_failures then enter('open') end
    elseif state == 'half_open' and ARGV[7] == '1' then
        reason = ARGV[9]
        after_probe = '1'
        enter('open')
    end
elseif op == 'abandon' then
    redis.call('ZREM', KEYS[2], ARGV[7])
elseif op == 'rate_limited' then
    local cap = tonumber(ARGV[9])
    local asked = tonumber(ARGV[7])
    if hold_until > now then
        -- Requests that were in flight when the pause began: no new pause, no doubling.
        if asked then hold_until = math.max(hold_until, now + math.min(asked, cap)) end
    else
        holds = holds + 1
        local pause = asked and math.min(asked, cap) or math.min(tonumber(ARGV[8]) * 2 ^ (holds - 1), cap)
        hold_until = now + pause
    end
    extra = {num(math.max(0, hold_until - now))}
end

-- A look changes the hash only when it made the cool-down's transition.
if op ~= 'view' or transition ~= '' then
    redis.call('HSET', KEYS[1], 'state', state, 'failures', failures, 'successes', successes,
        'changed_at', changed_at, 'retry_at', retry_at and num(retry_at) or '', 'reason', reason,
        'hold_until', num(hold_until), 'holds', holds, 'after_probe', after_probe)
end
local reply = {state, tostring(failures), tostring(successes), changed_at,
    retry_at and num(retry_at) or '', reason, num(hold_until), after_probe, transition}
for _, v in ipairs(extra) do reply[#reply + 1] = v end
return reply
"""


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    # Redis unreachable: nobody can say, so no request is made.
    UNKNOWN = "unknown"


def clock_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class BreakerView:
    state: BreakerState
    # Consecutive failures counted while CLOSED; in OPEN, those that opened it.
    failures: int
    # Probe successes counted while HALF_OPEN.
    successes: int
    # Unix time of the last transition (None: never).
    changed_at: float | None
    # OPEN: when it becomes HALF_OPEN; else None.
    retry_at: float | None
    # The last failure's reason ("" if none), or the Redis error for UNKNOWN.
    reason: str
    # OPEN: opened again by a failed probe (not by `failures` in a row).
    after_probe: bool = False

    def cause(self) -> str:
        """Why it opened, e.g. "10 consecutive failures (class search answered 503)"."""
        count = "a failed probe" if self.after_probe else _plural(self.failures, "consecutive failure")
        return f"{count} ({self.reason})" if self.reason else count

    def describe(self) -> str:
        """One line for /readyz and logs."""
        why = f" ({self.reason})" if self.reason else ""
        since = f" since {clock_time(self.changed_at)}" if self.changed_at is not None else ""
        if self.state is BreakerState.UNKNOWN:
            return f"unknown{why}: no requests to the class search"
        if self.state is BreakerState.OPEN:
            probes = f"; probes from {clock_time(self.retry_at)}" if self.retry_at is not None else ""
            return f"open{since} after {self.cause()}{probes}"
        if self.state is BreakerState.HALF_OPEN:
            return f"half open{since}: probing, {_plural(self.successes, 'probe success')} so far"
        if self.failures:
            return f"closed{since}, {_plural(self.failures, 'consecutive failure')}{why}"
        return f"closed{since}"


@dataclass(frozen=True)
class Admission:
    allowed: bool
    # Allowed as one of HALF_OPEN's probes: report its outcome with probe=True.
    probe: bool
    # Not allowed: seconds worth waiting before asking again (> 0).
    wait: float
    state: BreakerState
    # Not allowed: why.
    reason: str


class SourceUnavailable(Exception):
    """The guard cannot decide (Redis unreachable): no request may be made."""


@dataclass(frozen=True)
class _Reply:
    view: BreakerView
    hold_until: float
    transition: BreakerState | None
    extra: tuple[str, ...]


def _optional_time(raw: str) -> float | None:
    return float(raw) if raw else None


def _parse(reply: Sequence[bytes | str]) -> _Reply:
    text = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
    state, failures, successes, changed_at, retry_at, reason, hold_until, after_probe, transition = text[:9]
    view = BreakerView(
        state=BreakerState(state),
        failures=int(failures),
        successes=int(successes),
        changed_at=_optional_time(changed_at),
        retry_at=_optional_time(retry_at),
        reason=reason,
        after_probe=after_probe == "1",
    )
    return _Reply(view, float(hold_until), BreakerState(transition) if transition else None, tuple(text[9:]))


class SourceGuard:
    """Breaker, 429 pause and request budget shared by every replica through Redis.

    `window_seconds` (default 60) is the budget's window: `requests_per_minute` requests per that many
    seconds (tests use a short one); `heartbeat_seconds` how often `take_slot` calls its heartbeat while it
    waits."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        *,
        requests_per_minute: int,
        breaker_failures: int,
        breaker_cooldown: float,
        breaker_successes: int,
        clock: Callable[[], float] = time.time,
        window_seconds: int = 60,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        if min(requests_per_minute, breaker_failures, breaker_successes, window_seconds) < 1:
            raise ValueError("the request budget, its window and the breaker's counts must be at least 1")
        if breaker_cooldown <= 0 or heartbeat_seconds <= 0:
            raise ValueError("the breaker's cool-down and the heartbeat interval must be positive")
        self._redis: redis.Redis = redis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        storage_url = redis_url.replace("redis://", "async+redis://", 1).replace(
            "rediss://", "async+rediss://", 1
        )
        # One connection pool for the limiter and the breaker, closed by `aclose`.
        storage = RedisStorage(
            storage_url,
            implementation="redispy",
            key_prefix=f"{namespace}:asu",
            connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerSecond(requests_per_minute, window_seconds, namespace="requests")
        self._keys = [f"{namespace}:asu:guard", f"{namespace}:asu:probes"]
        self._script = self._redis.register_script(BREAKER_LUA)
        self._successes = breaker_successes
        self._breaker_args = [breaker_failures, breaker_cooldown, breaker_successes, PROBE_TTL_SECONDS]
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds
        # This process's live probe tokens with their admission time; an outcome reported with probe=True
        # spends one (the caller does not say which: they are interchangeable).
        self._probes: list[tuple[str, float]] = []
        self._shown: BreakerState | None = None

    async def _run(self, op: str, *args: str | float) -> _Reply:
        reply = await self._script(keys=self._keys, args=[op, self._clock(), *self._breaker_args, *args])
        parsed = _parse(reply)
        if parsed.transition is not None:
            self._log_transition(parsed.view)
        self._show(parsed.view.state)
        return parsed

    def _log_transition(self, view: BreakerView) -> None:
        SOURCE_BREAKER_TRANSITIONS.labels(view.state.value).inc()
        if view.state is BreakerState.OPEN:
            log.warning(
                "source breaker opened",
                failures=view.failures,
                after_probe=view.after_probe,
                reason=view.reason,
                probes_from=clock_time(view.retry_at) if view.retry_at is not None else None,
            )
        elif view.state is BreakerState.HALF_OPEN:
            log.info("source breaker half open: probing", probes=self._successes)
        else:
            log.info("source breaker closed", probe_successes=self._successes)

    def _show(self, state: BreakerState, error: str = "") -> None:
        if state is self._shown:
            return
        for each in BreakerState:
            SOURCE_BREAKER_STATE.labels(each.value).set(1 if each is state else 0)
        if state is BreakerState.UNKNOWN:
            log.warning("source guard cannot reach Redis: no requests to the class search", error=error)
        elif self._shown is BreakerState.UNKNOWN:
            log.info("source guard reaches Redis again", state=state.value)
        self._shown = state

    def _unknown(self, exc: RedisError) -> str:
        error = f"Redis unreachable: {exc}"
        self._show(BreakerState.UNKNOWN, error)
        return error

    def _spend_probe(self, probe: bool) -> str:
        if not probe:
            return ""
        horizon = self._clock() - PROBE_TTL_SECONDS
        self._probes = [(token, at) for token, at in self._probes if at > horizon]
        return self._probes.pop()[0] if self._probes else ""

    async def admit(self) -> Admission:
        """Whether one request may go now (breaker, fleet 429 pause); never raises."""
        token = uuid.uuid4().hex
        try:
            reply = await self._run("admit", token)
        except RedisError as exc:
            error = self._unknown(exc)
            return Admission(False, False, UNKNOWN_WAIT_SECONDS, BreakerState.UNKNOWN, error)
        verdict, wait_text = reply.extra
        view, wait = reply.view, max(MIN_WAIT_SECONDS, float(wait_text))
        if verdict == "allowed":
            return Admission(True, False, 0.0, view.state, "")
        if verdict == "probe":
            self._probes.append((token, self._clock()))
            return Admission(True, True, 0.0, view.state, "")
        if verdict == "open":
            until = clock_time(view.retry_at if view.retry_at is not None else self._clock() + wait)
            return Admission(
                False, False, wait, view.state, f"breaker open until {until} after {view.cause()}"
            )
        if verdict == "hold":
            paused = f"429 pause until {clock_time(reply.hold_until)}"
            return Admission(False, False, wait, view.state, paused)
        busy = f"breaker half open: {_plural(self._successes, 'probe')} in flight"
        return Admission(False, False, min(PROBE_BUSY_WAIT_SECONDS, wait), view.state, busy)

    async def take_slot(
        self, heartbeat: Callable[[], Awaitable[None]] | None = None, *, max_wait: float = 90.0
    ) -> bool:
        """Wait for room in the fleet's moving window (and the end of a 429 pause), calling `heartbeat` every
        `heartbeat_seconds` while waiting. False, at once, when the wait would exceed `max_wait` (the caller
        defers the work). Raises SourceUnavailable on Redis errors."""
        started = time.monotonic()
        beat = _Beat(heartbeat, self._heartbeat_seconds)
        try:
            while True:
                wait = await self._hold_remaining()
                if wait <= 0:
                    if await self._limiter.hit(self._item):
                        SOURCE_BUDGET_WAIT_SECONDS.observe(time.monotonic() - started)
                        return True
                    stats = await self._limiter.get_window_stats(self._item)
                    wait = max(MIN_WAIT_SECONDS, stats.reset_time - time.time()) + EDGE_MARGIN_SECONDS
                if time.monotonic() + wait - started > max_wait:
                    return False
                await beat.sleep(wait)
        except RedisError as exc:
            raise SourceUnavailable(
                f"the fleet's request budget is unavailable ({self._unknown(exc)})"
            ) from exc

    async def _hold_remaining(self) -> float:
        hold_until = await self._redis.hget(self._keys[0], "hold_until")
        return float(hold_until) - self._clock() if hold_until is not None else 0.0

    async def succeeded(self, *, probe: bool) -> None:
        """A request answered and was understood."""
        await self._report("success", int(probe), self._spend_probe(probe))

    async def failed(self, reason: str, *, probe: bool) -> None:
        """A request failed at the source: 5xx, timeout, connection error, an answer of unknown shape."""
        await self._report("failure", int(probe), self._spend_probe(probe), reason)

    async def abandoned(self, *, probe: bool) -> None:
        """An admitted request was not made, or its outcome says nothing about the source (a 429, our own
        browser failing): frees its probe slot at once instead of after PROBE_TTL_SECONDS."""
        if token := self._spend_probe(probe):
            await self._report("abandon", token)

    async def _report(self, op: str, *args: str | float) -> None:
        try:
            await self._run(op, *args)
        except RedisError as exc:
            # The outcome is lost; while Redis is gone no request is admitted anyway.
            log.warning("could not report a class-search outcome to the breaker", outcome=op, error=str(exc))
            self._unknown(exc)

    async def rate_limited(self, retry_after: float | None, *, probe: bool = False) -> float:
        """A 429: pause every replica, `retry_after` seconds when given, else 60 s doubling on each
        consecutive 429 (capped at 15 min; a success resets the doubling). A 429 during a pause (a request
        already in flight) only lengthens it to its own Retry-After. Returns the pause in seconds. Not a
        breaker failure; `probe`: it was a probe, whose slot is freed."""
        SOURCE_HOLDS.inc()
        asked = "" if retry_after is None else max(0.0, retry_after)
        token = self._spend_probe(probe)
        try:
            if token:
                await self._run("abandon", token)
            reply = await self._run("rate_limited", asked, DEFAULT_HOLD_SECONDS, MAX_HOLD_SECONDS)
        except RedisError as exc:
            self._unknown(exc)
            pause = min(
                MAX_HOLD_SECONDS, DEFAULT_HOLD_SECONDS if retry_after is None else max(0.0, retry_after)
            )
            log.warning("class search rate limit: could not share the pause", seconds=pause, error=str(exc))
            return pause
        pause = float(reply.extra[0])
        log.warning(
            "class search rate limit: pausing every scraper",
            seconds=round(pause, 3),
            retry_after=retry_after,
            until=clock_time(reply.hold_until),
        )
        return pause

    async def _snapshot(self) -> _Reply:
        try:
            return await self._run("view")
        except RedisError as exc:
            unknown = BreakerView(BreakerState.UNKNOWN, 0, 0, None, None, self._unknown(exc))
            return _Reply(unknown, 0.0, None, ())

    async def view(self) -> BreakerView:
        """The breaker as every replica sees it; UNKNOWN when Redis cannot say. Never raises."""
        return (await self._snapshot()).view

    def readiness_check(self) -> Callable[[], Awaitable[None]]:
        """Not ready unless the breaker is closed and no 429 pause is on."""

        async def check() -> None:
            snapshot = await self._snapshot()
            if snapshot.view.state is not BreakerState.CLOSED:
                raise NotReady(snapshot.view.describe())
            if snapshot.hold_until > self._clock():
                raise NotReady(f"paused by a 429 until {clock_time(snapshot.hold_until)}")

        return check

    async def aclose(self) -> None:
        await self._redis.aclose()


class _Beat:
    """Sleeps in steps so that `heartbeat` runs at least every `every` seconds of waiting."""

    def __init__(self, heartbeat: Callable[[], Awaitable[None]] | None, every: float) -> None:
        self._heartbeat = heartbeat
        self._every = every
        self._last = time.monotonic()

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            if self._heartbeat is None:
                await asyncio.sleep(end - now)
                return
            await asyncio.sleep(min(end, self._last + self._every) - now)
            if time.monotonic() >= self._last + self._every:
                await self._heartbeat()
                self._last = time.monotonic()
