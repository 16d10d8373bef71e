"""Redis: one client per process; every key is prefixed with the namespace."""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(
    redis_url: str, *, max_connections: int | None = None, wait_seconds: float | None = None
) -> redis.Redis:
    """A client on its own pool. With `max_connections`, a command that finds every connection busy waits
    up to `wait_seconds` for one, then raises `redis.exceptions.ConnectionError` ("No connection
    available"): a burst queues briefly instead of opening connections without bound."""
    if max_connections is None:
        client: redis.Redis = redis.Redis.from_url(
            redis_url, decode_responses=False, health_check_interval=30
        )
        return client
    pool = redis.BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=wait_seconds,
        decode_responses=False,
        health_check_interval=30,
    )
    # from_pool: closing the client closes its pool too.
    return redis.Redis.from_pool(pool)
