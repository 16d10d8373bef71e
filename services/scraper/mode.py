"""How the fleet reads the class search now: the JSON API (preferred), or the class-list page in a browser
for a while after the API shut us out. Kept in Redis, so one scraper's discovery switches every replica."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from shared.metrics import SOURCE_MODE

log = structlog.get_logger()


class Mode(StrEnum):
    API = "api"
    BROWSER = "browser"


class ModeStore:
    def __init__(
        self,
        redis_url: str,
        namespace: str,
        *,
        api_retry_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis: redis.Redis = redis.Redis.from_url(redis_url)
        self._key = f"{namespace}:asu:browser-until"
        self._api_retry_seconds = api_retry_seconds
        self._clock = clock
        self._shown: Mode | None = None

    async def current(self) -> Mode:
        """The browser while a switch is in force; the API otherwise (also when Redis cannot say: the guard
        stops every request then anyway)."""
        try:
            until = await self._redis.get(self._key)
        except RedisError:
            return self._show(Mode.API)
        if until is not None and float(until) > self._clock():
            return self._show(Mode.BROWSER)
        return self._show(Mode.API)

    async def use_browser(self, reason: str) -> None:
        """The API shut us out: every replica reads the page for ASU_API_RETRY_SECONDS, then tries the API."""
        until = self._clock() + self._api_retry_seconds
        try:
            await self._redis.set(self._key, str(until), px=max(1, int(self._api_retry_seconds * 1000)))
        except RedisError as exc:
            log.warning("could not share the switch to the browser", error=str(exc))
        self._show(Mode.BROWSER)
        log.warning(
            "class search API shut us out: reading the class-list page in a browser",
            reason=reason,
            api_retry_in=self._api_retry_seconds,
        )

    def _show(self, mode: Mode) -> Mode:
        if mode is not self._shown:
            for each in Mode:
                SOURCE_MODE.labels(each.value).set(1 if each is mode else 0)
            if self._shown is Mode.BROWSER and mode is Mode.API:
                log.info("trying the class search API again")
            self._shown = mode
        return mode

    async def aclose(self) -> None:
        await self._redis.aclose()
