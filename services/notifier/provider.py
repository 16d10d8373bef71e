"""What the email provider last said, for the notifier's pacing, `/readyz` and logs.

A refusal of our request or configuration, or an outage, pauses this replica's sending (growing, capped)
instead of burning every change's retries; the work stays in JetStream and the claims stay unsent until
the provider accepts again. One success clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from nats.aio.msg import Msg

from services.notifier.outcomes import ProviderRefused, ProviderUnavailable
from shared.delivery import Settler
from shared.health import Check, NotReady

log = structlog.get_logger()

# Pauses after 1, 2, 3... consecutive provider failures (then the last repeats): an outage of any length
# is retried at most every 5 minutes, and never given up.
BACKOFF_SECONDS = (5.0, 15.0, 60.0, 120.0, 300.0)


def capped(delays: tuple[float, ...], cap: float) -> tuple[float, ...]:
    """A retry schedule whose waits never exceed `cap` (EMAIL_RETRY_MAX_SECONDS)."""
    return tuple(min(delay, cap) for delay in delays)


@dataclass
class ProviderState:
    clock: Callable[[], float] = time.monotonic
    backoff: tuple[float, ...] = BACKOFF_SECONDS
    failures: int = 0
    reason: str = ""
    refused: bool = False
    since: float = 0.0
    pause_until: float = 0.0
    _wall_since: float = field(default=0.0, repr=False)

    def succeeded(self) -> None:
        if self.failures:
            log.info("email provider accepts again", after_failures=self.failures)
        self.failures, self.reason, self.refused, self.pause_until = 0, "", False, 0.0

    def failed(self, error: ProviderRefused | ProviderUnavailable) -> float:
        """Record a request-level failure; returns how long to pause (the provider's hint, if longer)."""
        if not self.failures:
            self.since, self._wall_since = self.clock(), time.time()
        self.failures += 1
        self.refused = isinstance(error, ProviderRefused)
        self.reason = str(error)
        pause = self.backoff[min(self.failures, len(self.backoff)) - 1]
        if isinstance(error, ProviderUnavailable) and error.retry_after is not None:
            pause = max(pause if self.failures > 1 else 0.0, error.retry_after)
        self.pause_until = self.clock() + pause
        event = "email provider refuses our configuration" if self.refused else "email provider unavailable"
        log.error(event, reason=self.reason, failures=self.failures, pause_seconds=round(pause, 1))
        return pause

    def paused(self) -> float:
        """Seconds this replica should still wait before calling the provider (0: go ahead)."""
        return max(0.0, self.pause_until - self.clock())

    async def hold_back(self, settler: Settler, msgs: Sequence[Msg]) -> bool:
        """While paused, give `msgs` back to be retried after the pause, without spending a request on
        them; returns whether it did."""
        pause = self.paused()
        if not pause:
            return False
        error = ProviderUnavailable(f"paused after the email provider failed: {self.reason}")
        for msg in msgs:
            await settler.fail(msg, error, transient=True, at_least=pause)
        return True

    def check(self) -> Check:
        async def provider() -> None:
            if not self.failures:
                return
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall_since))
            what = "refuses our configuration" if self.refused else "is unavailable"
            raise NotReady(f"the email provider {what} since {since} ({self.failures} tries): {self.reason}")

        return provider
