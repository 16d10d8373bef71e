"""Server-side sessions in Redis: the cookie holds only a random id; the user id stays on the server.

Each user's session ids are also kept in a set (`<ns>:user-sessions:<user id>`), so that a password reset
can end every session of that user at once. The set may name sessions that have expired since: ending
those deletes nothing.
"""

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
# Ids are 43 characters; a longer cookie is not looked up at all.
MAX_SESSION_ID = 128


def session_key(namespace: str, session_id: str) -> str:
    return f"{namespace}:session:{session_id}"


def user_sessions_key(namespace: str, user_id: int) -> str:
    return f"{namespace}:user-sessions:{user_id}"


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
    index = user_sessions_key(settings.namespace, user_id)
    # One transaction: a session is never live without its entry in the index that can revoke it.
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(session_key(settings.namespace, session_id), str(user_id), ex=SESSION_TTL)
        pipe.sadd(index, session_id)
        # The index outlives the newest session it names, then goes by itself.
        pipe.expire(index, SESSION_TTL)
        await pipe.execute()
    return session_cookie(settings, session_id)


async def end_session(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> None:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > MAX_SESSION_ID:
        return
    key = session_key(settings.namespace, session_id)
    value = await client.getdel(key)
    if value is not None and value.isdigit():
        await client.srem(user_sessions_key(settings.namespace, int(value)), session_id)


# Deletes every session the index names, then the index, atomically: a session started after this ran
# is in a fresh index; one started before is gone.
_END_ALL = """
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
    redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return #ids
"""


async def end_all_sessions(client: Redis, settings: Settings, user_id: int) -> None:
    """Log the user out everywhere (after a password reset)."""
    prefix = session_key(settings.namespace, "")
    await client.eval(_END_ALL, 1, user_sessions_key(settings.namespace, user_id), prefix)


def clear_cookie(response: Response[Any]) -> None:
    response.delete_cookie(COOKIE, path="/")


async def session_user(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> int | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > MAX_SESSION_ID:
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
