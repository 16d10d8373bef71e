"""The email provider's request budget, one for every notifier replica: a moving window in Redis through
the `limits` library, and a fleet-wide pause when the provider answers 429."""

from __future__ import annotations

import asyncio
import math
import time

import redis.asyncio as redis
import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from services.notifier.outcomes import ProviderUnavailable

log = structlog.get_logger()

# A request that waited for the window goes this much after the window frees: the provider counts a
# request when it arrives, a moment after we counted it, and the moments vary (a 429 at the edge then
# costs only the provider's short `retry-after`).
EDGE_MARGIN_SECONDS = 0.01
# Without a hint from the provider, a 429 pauses every replica this long.
DEFAULT_HOLD_SECONDS = 1.0
MAX_HOLD_SECONDS = 60.0


def rate_item(per_second: float) -> RateLimitItem:
    """`per_second` as whole requests per whole seconds: 2 → 2 per 1 s; 0.5 → 1 per 2 s; 2.5 → 5 per 2 s."""
    if per_second >= 1 and per_second == int(per_second):
        return RateLimitItemPerSecond(int(per_second))
    seconds = max(1, math.ceil(1 / per_second)) if per_second < 1 else 2
    return RateLimitItemPerSecond(max(1, math.floor(per_second * seconds)), seconds)


class Budget:
    def __init__(self, redis_url: str, namespace: str, per_second: float) -> None:
        storage_url = redis_url.replace("redis://", "async+redis://", 1).replace(
            "rediss://", "async+rediss://", 1
        )
        self._limiter = MovingWindowRateLimiter(RedisStorage(storage_url, implementation="redispy"))
        self._item = rate_item(per_second)
        self._key = f"{namespace}:resend:requests"
        self._hold_key = f"{namespace}:resend:hold-until"
        self._redis: redis.Redis = redis.Redis.from_url(redis_url)

    async def take(self) -> None:
        """Wait until this replica may make one request (the fleet's window has room, no 429 pause)."""
        try:
            while True:
                await self._wait_hold()
                if await self._limiter.hit(self._item, self._key):
                    return
                stats = await self._limiter.get_window_stats(self._item, self._key)
                await asyncio.sleep(max(0.005, stats.reset_time - time.time()) + EDGE_MARGIN_SECONDS)
        except RedisError as exc:
            # No budget, no request: a flood of 429s from several replicas is worse than waiting.
            raise ProviderUnavailable(f"the shared request budget is unavailable (Redis): {exc}") from exc

    async def retake(self) -> None:
        """Wait out the fleet's 429 pause before repeating a request the provider refused for the rate: it
        was counted in the window when first made, so it is not counted again."""
        try:
            await self._wait_hold()
        except RedisError as exc:
            raise ProviderUnavailable(f"the shared request budget is unavailable (Redis): {exc}") from exc

    async def _wait_hold(self) -> None:
        while (hold_until := await self._redis.get(self._hold_key)) is not None:
            remaining = float(hold_until) - time.time()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    async def hold(self, seconds: float | None) -> None:
        """The provider said 429: every replica waits what it asked (`retry-after`), capped."""
        pause = min(MAX_HOLD_SECONDS, seconds if seconds is not None else DEFAULT_HOLD_SECONDS)
        until = time.time() + pause
        try:
            await self._redis.set(self._hold_key, str(until), px=max(1, int(pause * 1000)))
        except RedisError as exc:
            log.warning("could not share the provider's 429 pause", error=str(exc))
        log.warning("email provider rate limit: pausing every notifier", seconds=round(pause, 3))

    async def aclose(self) -> None:
        await self._redis.aclose()
