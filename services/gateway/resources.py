"""What the request handlers share: opened in the app's lifespan, handed out by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolAcquireContext
from litestar import Request
from litestar.datastructures import State
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.asyncio import Redis

from services.gateway.throttle import Throttles
from shared.settings import Settings


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquisition waits at most `wait_seconds` for a connection (asyncpg's default is
    to wait forever), so a burst beyond the pool's size ends in `TimeoutError` (a 503), not a pile-up."""

    def __init__(self, *args: Any, wait_seconds: float, **kwargs: Any) -> None:
        self.wait_seconds = wait_seconds
        super().__init__(*args, **kwargs)

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return super().acquire(timeout=self.wait_seconds if timeout is None else timeout)


async def open_pool(settings: Settings) -> asyncpg.Pool:
    """The gateway's PostgreSQL pool: DATABASE_POOL_SIZE connections, POOL_WAIT_SECONDS to get one."""
    pool = BoundedPool(
        settings.database_url,
        wait_seconds=settings.pool_wait_seconds,
        min_size=1,
        max_size=settings.database_pool_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        # Connecting counts against the same wait: a PostgreSQL that does not answer is a 503 too.
        timeout=max(settings.pool_wait_seconds, 1.0),
    )
    await pool
    return pool


@dataclass(frozen=True)
class Resources:
    pool: asyncpg.Pool
    redis: Redis
    nc: Client
    js: JetStreamContext
    throttles: Throttles


def resources_of(state: State) -> Resources:
    return cast(Resources, state.resources)


def throttles_of(request: Request[Any, Any, Any]) -> Throttles:
    return resources_of(request.app.state).throttles


def provide_pool(state: State) -> asyncpg.Pool:
    return resources_of(state).pool


def provide_redis(state: State) -> Redis:
    return resources_of(state).redis


def provide_nc(state: State) -> Client:
    return resources_of(state).nc


def provide_js(state: State) -> JetStreamContext:
    return resources_of(state).js
