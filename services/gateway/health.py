"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import asyncpg
import structlog
from litestar import MediaType, Response, get
from litestar.di import NamedDependency
from nats.aio.client import Client
from redis.asyncio import Redis

log = structlog.get_logger()

CHECK_TIMEOUT = 1.0


@get("/healthz", media_type=MediaType.JSON)
async def healthz() -> dict[str, str]:
    """Liveness: 200 `{"status": "ok"}` whenever the process serves requests."""
    return {"status": "ok"}


async def _passes(name: str, check: Awaitable[Any]) -> bool:
    try:
        await asyncio.wait_for(check, timeout=CHECK_TIMEOUT)
    except Exception as exc:
        log.warning("readiness check failed", check=name, error=str(exc) or type(exc).__name__)
        return False
    return True


async def _nats_ok(nc: Client) -> None:
    if not nc.is_connected:
        raise ConnectionError("not connected")
    await nc.flush(timeout=1)


@get("/readyz", media_type=MediaType.JSON)
async def readyz(
    nc: NamedDependency[Client], pool: NamedDependency[asyncpg.Pool], redis: NamedDependency[Redis]
) -> Response[dict[str, Any]]:
    """Readiness: 200 `{"status": "ok", "checks": {...}}` when NATS is connected and Postgres and Redis
    answer within 1 s each; else 503 `{"status": "unavailable", "checks": {"nats": bool, "postgres": bool,
    "redis": bool}}`."""
    nats_ok, postgres_ok, redis_ok = await asyncio.gather(
        _passes("nats", _nats_ok(nc)),
        _passes("postgres", pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)),
        _passes("redis", redis.ping()),
    )
    checks = {"nats": nats_ok, "postgres": postgres_ok, "redis": redis_ok}
    ready = all(checks.values())
    return Response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
