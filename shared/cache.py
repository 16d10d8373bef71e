"""Redis: one client per process; every key is prefixed with the namespace."""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(redis_url: str) -> redis.Redis:
    client: redis.Redis = redis.Redis.from_url(redis_url, decode_responses=False, health_check_interval=30)
    return client
