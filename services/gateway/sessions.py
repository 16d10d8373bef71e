"""Server-side sessions in Redis: the cookie holds only a random id; the user id stays on the server."""

from __future__ import annotations

import secrets
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from redis.asyncio import Redis

from shared.settings import Settings

COOKIE = "pmc_session"
SESSION_TTL = 30 * 24 * 3600


def session_key(namespace: str, session_id: str) -> str:
    return f"{namespace}:session:{session_id}"


def session_cookie(settings: Settings, session_id: str) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=session_id,
        max_age=SESSION_TTL,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.site_url.startswith("https://"),
    )


async def start_session(client: Redis, settings: Settings, user_id: int) -> Cookie:
    # A fresh id at every log-in: a session id planted before log-in is never promoted (session fixation).
    session_id = secrets.token_urlsafe(32)
    await client.set(session_key(settings.namespace, session_id), str(user_id), ex=SESSION_TTL)
    return session_cookie(settings, session_id)


async def end_session(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> None:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await client.delete(session_key(settings.namespace, session_id))


def clear_cookie(response: Response[Any]) -> None:
    response.delete_cookie(COOKIE, path="/")


async def session_user(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> int | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 128:
        return None
    value = await client.get(session_key(settings.namespace, session_id))
    return int(value) if value is not None else None


async def current_user_id(
    request: Request[Any, Any, Any], redis: NamedDependency[Redis], settings: NamedDependency[Settings]
) -> int:
    """Dependency `user_id`: the logged-in user, or 401."""
    user_id = await session_user(redis, settings, request)
    if user_id is None:
        raise NotAuthorizedException(detail="log in first")
    return user_id
