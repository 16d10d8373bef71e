"""Throttles on the account endpoints: moving windows in Redis (`limits`), shared by every gateway process.

Log-in is throttled twice, and never per address alone, so that no stranger can lock a student out:
- per client address: 20 attempts a minute, whatever the accounts (one network trying many accounts);
- per client address and account: 5 attempts in 15 minutes without a success (a guesser at one account).
  A success clears it. Someone guessing from another network counts in a window of their own.

The account-email endpoints (register, verification resend, password reset request) share one window per
client address, and each address gets a few emails of each kind (`ADDRESS_LIMITS`).

The client address is the peer uvicorn reports. Behind the proxies named in TRUSTED_PROXIES, uvicorn
(`forwarded_allow_ips`) has already replaced it with the `X-Forwarded-For` entry the last trusted proxy
added; a header from anyone else is ignored, so a client cannot choose the address it is counted under.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
)
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from litestar import Request
from litestar.exceptions import HTTPException
from redis.asyncio import Redis

from shared.events import AccountEmailKind

LOGIN_PER_CLIENT = RateLimitItemPerMinute(20)
LOGIN_PER_ACCOUNT = RateLimitItemPerMinute(5, 15)
ACCOUNT_REQUESTS_PER_CLIENT = RateLimitItemPerMinute(30, 15)
# A few verification or reset emails an hour is plenty for a student who lost one; "someone tried to
# register with your address" once per 15 minutes at most; 10 account emails a day to any address.
ADDRESS_LIMITS: dict[AccountEmailKind, RateLimitItem] = {
    "verify": RateLimitItemPerHour(3),
    "reset": RateLimitItemPerHour(3),
    "already_registered": RateLimitItemPerMinute(1, 15),
}
ADDRESS_DAILY = RateLimitItemPerDay(10)

TOO_MANY_FROM_NETWORK = "too many requests from your network: try again in a few minutes"
TOO_MANY_LOGINS_FROM_NETWORK = "too many log-in attempts from your network: try again in a minute"
TOO_MANY_FAILURES = "too many failed log-ins: try again in 15 minutes"


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client is not None else "unknown"


class Throttles:
    """The gateway's rate limits, on the process's Redis pool (so they count against its bound)."""

    def __init__(self, namespace: str, redis_url: str, redis: Redis) -> None:
        storage_url = redis_url.replace("redis://", "async+redis://", 1).replace(
            "rediss://", "async+rediss://", 1
        )
        storage = RedisStorage(
            storage_url,
            implementation="redispy",
            key_prefix=f"{namespace}:limits",
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._limiter = MovingWindowRateLimiter(storage)

    async def take(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Count one use: None while within the limit, else the seconds until the window has room."""
        if await self._limiter.hit(item, *identifiers):
            return None
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def take_or_refuse(self, item: RateLimitItem, detail: str, *identifiers: str) -> None:
        """Count one use, or answer 429 with `Retry-After`."""
        retry_after = await self.take(item, *identifiers)
        if retry_after is not None:
            raise HTTPException(status_code=429, detail=detail, headers={"Retry-After": str(retry_after)})

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        await self._limiter.clear(item, *identifiers)

    async def login(self, request: Request[Any, Any, Any], account: str) -> None:
        """A log-in attempt for `account` (its canonical digest): 429 past either log-in limit."""
        client = client_address(request)
        await self.take_or_refuse(LOGIN_PER_CLIENT, TOO_MANY_LOGINS_FROM_NETWORK, "login-client", client)
        await self.take_or_refuse(LOGIN_PER_ACCOUNT, TOO_MANY_FAILURES, "login-account", client, account)

    async def login_succeeded(self, request: Request[Any, Any, Any], account: str) -> None:
        await self.clear(LOGIN_PER_ACCOUNT, "login-account", client_address(request), account)

    async def account_request(self, request: Request[Any, Any, Any]) -> None:
        """One request to register, resend a verification link or ask for a reset: 429 past the limit."""
        await self.take_or_refuse(
            ACCOUNT_REQUESTS_PER_CLIENT, TOO_MANY_FROM_NETWORK, "account-client", client_address(request)
        )

    async def address_allows(self, kind: AccountEmailKind, address: str) -> bool:
        """Whether one more email of `kind` may go to `address` (its canonical digest) now; counted when
        it may."""
        if await self.take(ADDRESS_LIMITS[kind], "account-mail", kind, address) is not None:
            return False
        return await self.take(ADDRESS_DAILY, "account-mail", "day", address) is None
