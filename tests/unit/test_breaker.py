"""The source breaker's rules, every transition driven through the Lua script on real Redis (the rules live
only there), with a fake clock to cross the cool-down and the probe slots' expiry without sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY

from services.scraper.guard import (
    PROBE_BUSY_WAIT_SECONDS,
    PROBE_TTL_SECONDS,
    BreakerState,
    BreakerView,
    SourceGuard,
)
from tests.infra import Servers

FAILURES = 3
COOLDOWN = 120.0
SUCCESSES = 2


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 8, 24, 14, 2, 11, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Guards:
    """Guards on one Redis and namespace sharing one fake clock (replicas of one fleet); closes them and
    deletes the namespace's keys at the end."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.clock = FakeClock()
        self._made: list[SourceGuard] = []

    def make(self, **overrides: Any) -> SourceGuard:
        options: dict[str, Any] = {
            "requests_per_minute": 600,
            "breaker_failures": FAILURES,
            "breaker_cooldown": COOLDOWN,
            "breaker_successes": SUCCESSES,
            "clock": self.clock,
        } | overrides
        guard = SourceGuard(self.redis_url, self.namespace, **options)
        self._made.append(guard)
        return guard

    async def aclose(self) -> None:
        for guard in self._made:
            await guard.aclose()
        client: redis.Redis = redis.Redis.from_url(self.redis_url)
        try:
            keys = [key async for key in client.scan_iter(f"{self.namespace}:asu:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def guards(servers: Servers, namespace: str) -> AsyncIterator[Guards]:
    made = Guards(servers.redis_url, namespace)
    yield made
    await made.aclose()


async def fail(guard: SourceGuard, times: int, reason: str = "class search answered 503") -> None:
    for _ in range(times):
        await guard.failed(reason, probe=False)


async def open_breaker(guards: Guards, guard: SourceGuard) -> None:
    await fail(guard, FAILURES)
    assert (await guard.view()).state is BreakerState.OPEN


async def half_open(guards: Guards, guard: SourceGuard) -> None:
    await open_breaker(guards, guard)
    guards.clock.advance(COOLDOWN)
    assert (await guard.view()).state is BreakerState.HALF_OPEN


def transitions(to: BreakerState) -> float:
    return REGISTRY.get_sample_value("pmc_source_breaker_transitions_total", {"to": to.value}) or 0.0


async def test_a_fresh_breaker_is_closed_and_admits(guards: Guards) -> None:
    guard = guards.make()
    view = await guard.view()
    assert (view.state, view.failures, view.changed_at, view.retry_at) == (BreakerState.CLOSED, 0, None, None)
    admission = await guard.admit()
    assert (admission.allowed, admission.probe, admission.state) == (True, False, BreakerState.CLOSED)


async def test_it_opens_at_exactly_the_nth_consecutive_failure(guards: Guards) -> None:
    guard = guards.make()
    await fail(guard, FAILURES - 1)
    view = await guard.view()
    assert (view.state, view.failures) == (BreakerState.CLOSED, FAILURES - 1)
    assert (await guard.admit()).allowed

    await fail(guard, 1, "timed out after 10 s")

    view = await guard.view()
    assert view.state is BreakerState.OPEN
    assert view.failures == FAILURES
    assert view.reason == "timed out after 10 s"
    assert view.changed_at == guards.clock.now
    assert view.retry_at == guards.clock.now + COOLDOWN
    admission = await guard.admit()
    assert (admission.allowed, admission.probe, admission.state) == (False, False, BreakerState.OPEN)
    assert admission.wait == pytest.approx(COOLDOWN)
    assert (
        admission.reason
        == "breaker open until 14:04:11 UTC after 3 consecutive failures (timed out after 10 s)"
    )


async def test_a_success_resets_the_consecutive_count(guards: Guards) -> None:
    guard = guards.make()
    await fail(guard, FAILURES - 1)
    await guard.succeeded(probe=False)
    assert (await guard.view()).failures == 0
    await fail(guard, FAILURES - 1)
    view = await guard.view()
    assert (view.state, view.failures) == (BreakerState.CLOSED, FAILURES - 1)


async def test_it_becomes_half_open_when_the_cooldown_is_over(guards: Guards) -> None:
    guard = guards.make()
    await open_breaker(guards, guard)
    guards.clock.advance(COOLDOWN - 0.5)
    admission = await guard.admit()
    assert (admission.allowed, admission.state) == (False, BreakerState.OPEN)
    assert admission.wait == pytest.approx(0.5)

    guards.clock.advance(0.5)

    view = await guard.view()
    assert (view.state, view.changed_at, view.retry_at) == (BreakerState.HALF_OPEN, guards.clock.now, None)
    admission = await guard.admit()
    assert (admission.allowed, admission.probe, admission.state) == (True, True, BreakerState.HALF_OPEN)


async def test_half_open_admits_at_most_k_probes_at_once(guards: Guards) -> None:
    guard = guards.make()
    await half_open(guards, guard)
    admitted = [await guard.admit() for _ in range(SUCCESSES)]
    assert all(a.allowed and a.probe for a in admitted)

    refused = await guard.admit()
    assert (refused.allowed, refused.probe, refused.state) == (False, False, BreakerState.HALF_OPEN)
    assert 0 < refused.wait <= PROBE_BUSY_WAIT_SECONDS
    assert refused.reason == f"breaker half open: {SUCCESSES} probes in flight"

    # One probe answered: its slot is free for the next probe, and only one.
    await guard.succeeded(probe=True)
    assert (await guard.admit()).probe
    assert not (await guard.admit()).allowed


async def test_a_failed_probe_opens_it_again_with_a_new_cooldown(guards: Guards) -> None:
    guard = guards.make()
    await half_open(guards, guard)
    assert (await guard.admit()).probe
    await guard.succeeded(probe=True)
    assert (await guard.admit()).probe
    guards.clock.advance(3)

    await guard.failed("class search answered 502", probe=True)

    view = await guard.view()
    assert view.state is BreakerState.OPEN
    assert view.after_probe
    assert view.retry_at == guards.clock.now + COOLDOWN
    assert view.reason == "class search answered 502"
    assert view.describe() == (
        "open since 14:04:14 UTC after a failed probe (class search answered 502); probes from 14:06:14 UTC"
    )
    # The success before the failure does not carry over to the next half-open period.
    guards.clock.advance(COOLDOWN)
    assert (await guard.view()).successes == 0


async def test_k_probe_successes_close_it_and_reset_the_counts(guards: Guards) -> None:
    guard = guards.make()
    await half_open(guards, guard)
    for count in range(1, SUCCESSES + 1):
        assert (await guard.admit()).probe
        await guard.succeeded(probe=True)
        view = await guard.view()
        if count < SUCCESSES:
            assert (view.state, view.successes) == (BreakerState.HALF_OPEN, count)

    view = await guard.view()
    assert (view.state, view.failures, view.successes) == (BreakerState.CLOSED, 0, 0)
    assert not view.after_probe
    admission = await guard.admit()
    assert (admission.allowed, admission.probe) == (True, False)
    # A fresh count: N-1 failures after closing do not open it.
    await fail(guard, FAILURES - 1)
    assert (await guard.view()).state is BreakerState.CLOSED


async def test_a_probe_that_never_reports_frees_its_slot_after_a_minute(guards: Guards) -> None:
    dead, alive = guards.make(breaker_successes=1), guards.make(breaker_successes=1)
    await open_breaker(guards, dead)
    guards.clock.advance(COOLDOWN)
    assert (await dead.admit()).probe
    guards.clock.advance(PROBE_TTL_SECONDS - 1)
    refused = await alive.admit()
    assert not refused.allowed
    assert refused.wait == pytest.approx(1)

    guards.clock.advance(1)

    assert (await alive.admit()).probe
    # The expired probe's late answer no longer counts; the live one's does.
    await dead.succeeded(probe=True)
    assert (await alive.view()).state is BreakerState.HALF_OPEN
    await alive.succeeded(probe=True)
    assert (await alive.view()).state is BreakerState.CLOSED


async def test_an_abandoned_probe_frees_its_slot_at_once_without_counting(guards: Guards) -> None:
    guard = guards.make(breaker_successes=1)
    await open_breaker(guards, guard)
    guards.clock.advance(COOLDOWN)
    assert (await guard.admit()).probe
    assert not (await guard.admit()).allowed

    await guard.abandoned(probe=True)

    view = await guard.view()
    assert (view.state, view.successes) == (BreakerState.HALF_OPEN, 0)
    assert (await guard.admit()).probe


async def test_outcomes_of_earlier_requests_change_nothing_while_open(guards: Guards) -> None:
    guard = guards.make()
    await open_breaker(guards, guard)
    before = await guard.view()

    await guard.succeeded(probe=False)
    await guard.failed("class search answered 500", probe=False)
    await guard.failed("class search answered 500", probe=True)

    assert await guard.view() == before


async def test_outcomes_of_earlier_requests_change_nothing_while_half_open(guards: Guards) -> None:
    guard = guards.make()
    await half_open(guards, guard)
    before = await guard.view()

    await guard.succeeded(probe=False)
    await guard.failed("class search answered 500", probe=False)

    assert await guard.view() == before


async def test_a_success_reported_as_probe_without_a_live_probe_does_not_count(guards: Guards) -> None:
    guard = guards.make(breaker_successes=1)
    await half_open(guards, guard)
    await guard.succeeded(probe=True)
    assert (await guard.view()).state is BreakerState.HALF_OPEN


async def test_each_transition_is_counted_and_shown_once(guards: Guards) -> None:
    guard = guards.make(breaker_successes=1)
    counted = {state: transitions(state) for state in BreakerState}

    def state_gauge() -> dict[str, float | None]:
        return {
            s.value: REGISTRY.get_sample_value("pmc_source_breaker_state", {"state": s}) for s in BreakerState
        }

    await open_breaker(guards, guard)
    assert state_gauge() == {"closed": 0, "open": 1, "half_open": 0, "unknown": 0}
    await fail(guard, 2)
    guards.clock.advance(COOLDOWN)
    await guard.view()
    await guard.view()
    assert (await guard.admit()).probe
    await guard.succeeded(probe=True)

    assert {state: transitions(state) - counted[state] for state in BreakerState} == {
        BreakerState.OPEN: 1,
        BreakerState.HALF_OPEN: 1,
        BreakerState.CLOSED: 1,
        BreakerState.UNKNOWN: 0,
    }
    assert state_gauge() == {"closed": 1, "open": 0, "half_open": 0, "unknown": 0}


def at(hms: str) -> float:
    return datetime.fromisoformat(f"2026-08-24T{hms}+00:00").timestamp()


@pytest.mark.parametrize(
    ("view", "line"),
    [
        (
            BreakerView(
                BreakerState.OPEN, 10, 0, at("14:02:11"), at("14:04:11"), "class search answered 503"
            ),
            "open since 14:02:11 UTC after 10 consecutive failures (class search answered 503);"
            " probes from 14:04:11 UTC",
        ),
        (
            BreakerView(
                BreakerState.OPEN, 1, 0, at("14:02:11"), at("14:04:11"), "timed out", after_probe=True
            ),
            "open since 14:02:11 UTC after a failed probe (timed out); probes from 14:04:11 UTC",
        ),
        (
            BreakerView(BreakerState.HALF_OPEN, 10, 1, at("14:04:11"), None, "class search answered 503"),
            "half open since 14:04:11 UTC: probing, 1 probe success so far",
        ),
        (BreakerView(BreakerState.CLOSED, 0, 0, None, None, ""), "closed"),
        (
            BreakerView(BreakerState.CLOSED, 2, 0, at("14:06:00"), None, "class search answered 500"),
            "closed since 14:06:00 UTC, 2 consecutive failures (class search answered 500)",
        ),
        (
            BreakerView(BreakerState.UNKNOWN, 0, 0, None, None, "Redis unreachable: Connection refused"),
            "unknown (Redis unreachable: Connection refused): no requests to the class search",
        ),
    ],
)
def test_describe_says_it_in_one_line(view: BreakerView, line: str) -> None:
    assert view.describe() == line
