"""The source guard as a fleet sees it: several guards (and processes) on one Redis share one breaker, one
429 pause and one request budget; without Redis nothing is allowed."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from redis.exceptions import RedisError

from devtools.embedded import valkey_server_binary
from devtools.net import free_port
from services.scraper.guard import (
    DEFAULT_HOLD_SECONDS,
    MAX_HOLD_SECONDS,
    UNKNOWN_WAIT_SECONDS,
    BreakerState,
    SourceGuard,
    SourceUnavailable,
)
from shared.health import NotReady
from tests.infra import REPO, Servers
from tests.unit.test_breaker import COOLDOWN, FAILURES, SUCCESSES, Guards, fail

pytestmark = pytest.mark.integration


@pytest.fixture
async def guards(servers: Servers, namespace: str) -> AsyncIterator[Guards]:
    made = Guards(servers.redis_url, namespace)
    yield made
    await made.aclose()


def transitions(to: BreakerState) -> float:
    return REGISTRY.get_sample_value("pmc_source_breaker_transitions_total", {"to": to.value}) or 0.0


async def test_two_guards_see_one_breaker(guards: Guards) -> None:
    first, second = guards.make(), guards.make()
    await fail(first, FAILURES - 1)
    await fail(second, 1)

    assert (await first.view()).state is BreakerState.OPEN
    admission = await second.admit()
    assert (admission.allowed, admission.state) == (False, BreakerState.OPEN)

    guards.clock.advance(COOLDOWN)
    assert (await first.admit()).probe
    assert (await second.admit()).probe
    assert not (await first.admit()).allowed
    await first.succeeded(probe=True)
    await second.succeeded(probe=True)
    assert (await first.view()).state is (await second.view()).state is BreakerState.CLOSED


async def test_replicas_racing_make_each_transition_once(guards: Guards) -> None:
    fleet = [guards.make() for _ in range(4)]
    opened = transitions(BreakerState.OPEN)

    await asyncio.gather(
        *(g.failed("class search answered 503", probe=False) for g in fleet for _ in range(5))
    )

    assert transitions(BreakerState.OPEN) - opened == 1
    view = await fleet[0].view()
    assert (view.state, view.failures) == (BreakerState.OPEN, FAILURES)

    guards.clock.advance(COOLDOWN)
    admissions = await asyncio.gather(*(g.admit() for g in fleet for _ in range(5)))
    assert sum(a.probe for a in admissions) == SUCCESSES
    assert all(a.allowed == a.probe for a in admissions)


async def test_a_guard_without_redis_allows_nothing(servers: Servers, closed_port: int) -> None:
    guard = SourceGuard(
        f"redis://127.0.0.1:{closed_port}/0",
        "unreachable",
        requests_per_minute=600,
        breaker_failures=FAILURES,
        breaker_cooldown=COOLDOWN,
        breaker_successes=SUCCESSES,
    )
    try:
        await assert_unknown(guard)
        # Outcomes and 429s cannot be shared, but they do not raise into the caller either.
        await guard.succeeded(probe=False)
        await guard.failed("class search answered 503", probe=True)
        assert await guard.rate_limited(None) == DEFAULT_HOLD_SECONDS
    finally:
        await guard.aclose()


async def assert_unknown(guard: SourceGuard) -> None:
    admission = await guard.admit()
    assert (admission.allowed, admission.probe, admission.state) == (False, False, BreakerState.UNKNOWN)
    assert admission.wait == UNKNOWN_WAIT_SECONDS
    assert admission.reason.startswith("Redis unreachable")
    view = await guard.view()
    assert view.state is BreakerState.UNKNOWN
    assert view.describe().startswith("unknown (Redis unreachable")
    with pytest.raises(NotReady, match="no requests to the class search"):
        await guard.readiness_check()()
    with pytest.raises(SourceUnavailable):
        await guard.take_slot(max_wait=1)
    assert REGISTRY.get_sample_value("pmc_source_breaker_state", {"state": "unknown"}) == 1


class PrivateRedis:
    """A Redis server of this test's own, to stop and start again."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._data = data
        self._process: asyncio.subprocess.Process | None = None

    @staticmethod
    def binary() -> str:
        return shutil.which("redis-server") or shutil.which("valkey-server") or str(valkey_server_binary())

    async def start(self) -> None:
        argv = [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._data)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._process = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client: redis.Redis = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    await client.ping()
                    return
                except RedisError:
                    if time.monotonic() > deadline or self._process.returncode is not None:
                        raise
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            await asyncio.wait_for(self._process.wait(), timeout=10)
            self._process = None


async def test_losing_redis_stops_every_request_until_it_is_back(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    guard = SourceGuard(
        server.url,
        "loss",
        requests_per_minute=600,
        breaker_failures=FAILURES,
        breaker_cooldown=COOLDOWN,
        breaker_successes=SUCCESSES,
    )
    try:
        await server.start()
        assert (await guard.admit()).allowed
        await guard.readiness_check()()

        await server.stop()
        await assert_unknown(guard)

        await server.start()
        admission = await guard.admit()
        assert (admission.allowed, admission.state) == (True, BreakerState.CLOSED)
        assert (await guard.view()).state is BreakerState.CLOSED
        await guard.readiness_check()()
        assert await guard.take_slot(max_wait=1)
    finally:
        await guard.aclose()
        await server.stop()


async def test_a_retry_after_pauses_every_replica(guards: Guards) -> None:
    hit, other = guards.make(), guards.make()
    holds = REGISTRY.get_sample_value("pmc_source_holds_total") or 0.0

    assert await hit.rate_limited(30) == 30

    admission = await other.admit()
    assert (admission.allowed, admission.state) == (False, BreakerState.CLOSED)
    assert admission.wait == pytest.approx(30)
    assert admission.reason == "429 pause until 14:02:41 UTC"
    with pytest.raises(NotReady, match="paused by a 429 until 14:02:41 UTC"):
        await other.readiness_check()()
    assert REGISTRY.get_sample_value("pmc_source_holds_total") == holds + 1

    guards.clock.advance(30)
    assert (await other.admit()).allowed
    await other.readiness_check()()


async def test_without_retry_after_the_pause_doubles_up_to_the_cap_and_a_success_resets_it(
    guards: Guards,
) -> None:
    guard = guards.make()
    pauses = []
    for _ in range(6):
        pauses.append(await guard.rate_limited(None))
        guards.clock.advance(pauses[-1])
    assert pauses == [DEFAULT_HOLD_SECONDS, 120, 240, 480, MAX_HOLD_SECONDS, MAX_HOLD_SECONDS]
    assert await guard.rate_limited(3600) == MAX_HOLD_SECONDS
    guards.clock.advance(MAX_HOLD_SECONDS)

    await guard.succeeded(probe=False)

    assert await guard.rate_limited(None) == DEFAULT_HOLD_SECONDS


async def test_429s_of_requests_already_in_flight_do_not_double_the_pause(guards: Guards) -> None:
    first, second = guards.make(), guards.make()
    assert await first.rate_limited(None) == DEFAULT_HOLD_SECONDS
    guards.clock.advance(10)

    assert await second.rate_limited(None) == DEFAULT_HOLD_SECONDS - 10
    # A longer Retry-After lengthens the pause; it still counts as one 429 in a row.
    assert await second.rate_limited(100) == 100
    guards.clock.advance(100)
    assert await first.rate_limited(None) == 2 * DEFAULT_HOLD_SECONDS


async def test_a_429_is_not_a_breaker_failure_and_frees_a_probe_slot(guards: Guards) -> None:
    guard = guards.make(breaker_successes=1)
    for _ in range(FAILURES + 1):
        await guard.rate_limited(1)
        guards.clock.advance(1)
    assert (await guard.view()).failures == 0

    await fail(guard, FAILURES)
    guards.clock.advance(COOLDOWN)
    assert (await guard.admit()).probe
    await guard.rate_limited(1, probe=True)
    guards.clock.advance(1)
    view = await guard.view()
    assert (view.state, view.successes) == (BreakerState.HALF_OPEN, 0)
    assert (await guard.admit()).probe


async def test_a_waiting_request_sends_heartbeats_and_is_counted(guards: Guards) -> None:
    guard = guards.make(requests_per_minute=1, window_seconds=1, heartbeat_seconds=0.1, clock=time.time)
    waits = REGISTRY.get_sample_value("pmc_source_budget_wait_seconds_count") or 0.0
    assert await guard.take_slot()
    beats: list[float] = []

    async def heartbeat() -> None:
        beats.append(time.monotonic())

    started = time.monotonic()
    assert await guard.take_slot(heartbeat, max_wait=5)
    ended = time.monotonic()

    assert ended - started > 0.5
    marks = [started, *beats, ended]
    assert max(b - a for a, b in itertools.pairwise(marks)) < 0.1 + 0.1
    assert REGISTRY.get_sample_value("pmc_source_budget_wait_seconds_count") == waits + 2


async def test_a_request_that_would_wait_too_long_is_refused_at_once(guards: Guards) -> None:
    guard = guards.make(requests_per_minute=2, window_seconds=60, clock=time.time)
    assert await guard.take_slot()
    assert await guard.take_slot()

    started = time.monotonic()
    assert not await guard.take_slot(max_wait=5)
    assert time.monotonic() - started < 1


async def test_a_request_waits_out_the_fleets_429_pause(guards: Guards) -> None:
    hit, other = guards.make(clock=time.time), guards.make(clock=time.time)
    await hit.rate_limited(0.3)
    assert not await other.take_slot(max_wait=0.1)

    started = time.monotonic()
    assert await other.take_slot(max_wait=5)
    assert time.monotonic() - started >= 0.2


# One replica as its own process: waits for "go" on stdin, takes slots as fast as the budget lets it, and
# prints when it got each one.
TAKER = """
import asyncio, json, sys, time
from services.scraper.guard import SourceGuard

async def main(url: str, namespace: str, budget: int, window: int, attempts: int) -> None:
    guard = SourceGuard(url, namespace, requests_per_minute=budget, breaker_failures=1, breaker_cooldown=1,
                        breaker_successes=1, window_seconds=window)
    await guard.view()
    print("ready", flush=True)
    sys.stdin.readline()
    taken = []
    for _ in range(attempts):
        if await guard.take_slot(max_wait=30):
            taken.append(time.time())
    await guard.aclose()
    print(json.dumps(taken), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])))
"""
# The limiter reads the clock a moment before `take_slot` returns, and that moment's length varies between
# processes on a busy machine; the test's timestamps are taken after the return.
CLOCK_SLACK_SECONDS = 0.05


def test_two_processes_never_exceed_the_budget_in_any_window(servers: Servers, namespace: str) -> None:
    budget, window, attempts = 10, 1, 15
    args = [servers.redis_url, namespace, str(budget), str(window), str(attempts)]
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for taker in takers:
            assert taker.stdout is not None
            assert taker.stdout.readline().strip() == "ready"
        for taker in takers:
            assert taker.stdin is not None
            taker.stdin.write("go\n")
            taker.stdin.flush()
        results = [taker.communicate(timeout=60)[0] for taker in takers]
    finally:
        for taker in takers:
            taker.kill()
            taker.wait()
    assert [taker.returncode for taker in takers] == [0, 0]

    taken = sorted(t for output in results for t in json.loads(output.strip().splitlines()[-1]))
    assert len(taken) == 2 * attempts
    assert sum(t < taken[0] + window for t in taken) == budget
    closest = min(later - earlier for earlier, later in zip(taken, taken[budget:], strict=False))
    assert closest >= window - CLOCK_SLACK_SECONDS
