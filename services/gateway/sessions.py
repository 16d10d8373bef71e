"""Server-side sessions in Redis: the cookie holds only a random id; the user id stays on the server.

A session ends when it has not been used for SESSION_IDLE_SECONDS (each use extends it), and 30 days after
the log-in whatever its use. The value is `<user id>:<log-in time>`; the key's TTL is the idle deadline,
capped at the absolute one, and moved by each use in one atomic step (`_TOUCH`).

Each user's session ids are also kept in a set (`<ns>:user-sessions:<user id>`), so that a password reset
or "log out everywhere" can end every session of that user at once. The set may name sessions that have
expired since: ending those deletes nothing.

The cookie is `__Host-pmc_session` when the site is served over https (the prefix makes browsers insist on
Secure, Path=/ and no Domain, so no subdomain can plant or overwrite it), plain `pmc_session` on http
(development), where a `__Host-` cookie would be refused.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from redis.asyncio import Redis

from shared.settings import Settings

COOKIE = "pmc_session"
SECURE_COOKIE = "__Host-pmc_session"
MAX_SESSION_SECONDS = 30 * 24 * 3600
# Ids are 43 characters; a longer cookie is not looked up at all.
MAX_SESSION_ID = 128


def cookie_name(settings: Settings) -> str:
    return SECURE_COOKIE if settings.site_url.startswith("https://") else COOKIE


def session_key(namespace: str, session_id: str) -> str:
    return f"{namespace}:session:{session_id}"


def user_sessions_key(namespace: str, user_id: int) -> str:
    return f"{namespace}:user-sessions:{user_id}"


def session_ref(session_id: str) -> str:
    """What names a session outside Redis (live streams, revocation messages): never the id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def session_cookie(settings: Settings, session_id: str) -> Cookie:
    return Cookie(
        key=cookie_name(settings),
        value=session_id,
        max_age=MAX_SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.site_url.startswith("https://"),
    )


def session_id_of(settings: Settings, request: Request[Any, Any, Any]) -> str | None:
    """The session id the request's cookie names, if it could be one."""
    session_id = request.cookies.get(cookie_name(settings))
    if not session_id or len(session_id) > MAX_SESSION_ID:
        return None
    return session_id


def parse_session(value: bytes | str, now: float) -> int | None:
    """The user of a stored session value, or None once it is past its absolute lifetime. A value not of
    our making raises ValueError: corrupt state is a bug to see, not a log-out."""
    text = value.decode() if isinstance(value, bytes) else value
    user, started = text.split(":")
    if now - int(started) >= MAX_SESSION_SECONDS:
        return None
    return int(user)


async def start_session(client: Redis, settings: Settings, user_id: int) -> Cookie:
    # A fresh id at every log-in: a session id planted before log-in is never promoted (session fixation).
    session_id = secrets.token_urlsafe(32)
    index = user_sessions_key(settings.namespace, user_id)
    value = f"{user_id}:{int(time.time())}"
    # One transaction: a session is never live without its entry in the index that can revoke it.
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(session_key(settings.namespace, session_id), value, ex=settings.session_idle_seconds)
        pipe.sadd(index, session_id)
        # The index outlives the newest session it names, then goes by itself.
        pipe.expire(index, MAX_SESSION_SECONDS)
        await pipe.execute()
    return session_cookie(settings, session_id)


async def end_session(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> str | None:
    """End the request's session; the id of the session that ended, if there was one."""
    session_id = session_id_of(settings, request)
    if session_id is None:
        return None
    value = await client.getdel(session_key(settings.namespace, session_id))
    if value is None:
        return None
    user = (value.decode() if isinstance(value, bytes) else str(value)).split(":", 1)[0]
    if user.isdigit():
        await client.srem(user_sessions_key(settings.namespace, int(user)), session_id)
    return session_id


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
    """Log the user out everywhere (password reset, "log out everywhere", account deletion). Their live
    streams end at their next check; `live.revoke` ends them at once."""
    prefix = session_key(settings.namespace, "")
    await client.eval(_END_ALL, 1, user_sessions_key(settings.namespace, user_id), prefix)


def clear_cookie(response: Response[Any]) -> None:
    """Tell the browser to forget the session cookie, under either name (a `__Host-` cookie is only
    replaced by a Secure one with Path=/)."""
    for name in (COOKIE, SECURE_COOKIE):
        response.set_cookie(
            Cookie(
                key=name,
                value="",
                max_age=0,
                path="/",
                httponly=True,
                samesite="lax",
                secure=name == SECURE_COOKIE,
            )
        )


# Reads a session and moves its idle deadline: the TTL becomes the idle time, or what is left of the
# absolute lifetime when that is shorter. Returns the value, or nil for an unknown or ended session.
_TOUCH = """
local value = redis.call('GET', KEYS[1])
if not value then return nil end
local started = tonumber(string.match(value, ':(%d+)$'))
if not started then return value end
local left = started + tonumber(ARGV[3]) - tonumber(ARGV[1])
if left <= 0 then
    redis.call('DEL', KEYS[1])
    return nil
end
redis.call('EXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), left))
return value
"""


async def session_user(client: Redis, settings: Settings, request: Request[Any, Any, Any]) -> int | None:
    """The user the request's session belongs to, or None; using it extends the session (sliding)."""
    session_id = session_id_of(settings, request)
    if session_id is None:
        return None
    now = time.time()
    value = await client.eval(
        _TOUCH,
        1,
        session_key(settings.namespace, session_id),
        int(now),
        settings.session_idle_seconds,
        MAX_SESSION_SECONDS,
    )
    return parse_session(value, now) if value is not None else None


async def session_alive(client: Redis, settings: Settings, session_id: str) -> bool:
    """Whether a session still holds, without using it (an open live stream is not activity)."""
    value = await client.get(session_key(settings.namespace, session_id))
    return value is not None and parse_session(value, time.time()) is not None


async def current_user_id(
    request: Request[Any, Any, Any], redis: NamedDependency[Redis], settings: NamedDependency[Settings]
) -> int:
    """Dependency `user_id`: the logged-in user, or 401."""
    user_id = await session_user(redis, settings, request)
    if user_id is None:
        raise NotAuthorizedException(detail="log in first")
    return user_id
