"""Accounts: register, log in, log out, who am I."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException
from redis.asyncio import Redis

from services.gateway.bodies import UnprocessableContent, read_json
from services.gateway.passwords import dummy_hash, hash_password, verify_password
from services.gateway.sessions import clear_cookie, end_session, session_user, start_session
from shared.settings import Settings

log = structlog.get_logger()

_USER_COLUMNS = "id, email, notifications_enabled, email_status"
INSERT_USER = f"INSERT INTO app_user (email, password_hash) VALUES ($1, $2) RETURNING {_USER_COLUMNS}"
SELECT_USER_BY_EMAIL = f"SELECT {_USER_COLUMNS}, password_hash FROM app_user WHERE lower(email) = lower($1)"
SELECT_USER = f"SELECT {_USER_COLUMNS} FROM app_user WHERE id = $1"
SET_NOTIFICATIONS = f"UPDATE app_user SET notifications_enabled = $2 WHERE id = $1 RETURNING {_USER_COLUMNS}"

# One plain address: no spaces, and none of the characters that would make it a list of addresses.
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\".]+$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
BAD_CREDENTIALS = "wrong email or password"
# Five failures lock the email for 15 minutes, whether or not an account has it (no existence leak).
MAX_FAILURES, LOCK_SECONDS = 5, 15 * 60


class Credentials(msgspec.Struct, kw_only=True):
    email: str = ""
    password: str = ""


class UserOut(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    email: str
    notifications_enabled: bool
    # "ok", or why no email goes out: "bounced", "complained", "rejected" (refused by the provider).
    email_status: str

    @classmethod
    def of(cls, row: asyncpg.Record) -> UserOut:
        return cls(
            id=row["id"],
            email=row["email"],
            notifications_enabled=row["notifications_enabled"],
            email_status=row["email_status"],
        )


class Preferences(msgspec.Struct, kw_only=True):
    notifications_enabled: bool | None = None


def validate_credentials(credentials: Credentials) -> str | None:
    """The message for the first problem with a registration, or None."""
    email = credentials.email.strip()
    if not email:
        return "email is required"
    if len(email) > 254 or not _EMAIL.match(email):
        return "email must look like name@example.edu"
    if len(credentials.password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    if len(credentials.password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    return None


def failures_key(namespace: str, email: str) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"{namespace}:login-failures:{digest}"


@post("/api/v1/auth/register", status_code=201)
async def register(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[UserOut]:
    """Create an account from `{"email", "password"}` and log it in.

    201 `{"id", "email"}` with the session cookie; 422 `{"detail"}` when the email does not look like an
    email or the password is shorter than 8 or longer than 1024 characters; 409 when an account already
    has this email (case-insensitive).
    """
    credentials = await read_json(request, Credentials)
    if (problem := validate_credentials(credentials)) is not None:
        raise UnprocessableContent(detail=problem)
    password_hash = await asyncio.to_thread(hash_password, credentials.password)
    try:
        row = await pool.fetchrow(INSERT_USER, credentials.email.strip(), password_hash)
    except asyncpg.UniqueViolationError:
        raise HTTPException(status_code=409, detail="an account with this email already exists") from None
    assert row is not None
    log.info("user registered", user_id=row["id"])
    cookie = await start_session(redis, settings, row["id"])
    return Response(UserOut.of(row), status_code=201, cookies=[cookie])


@post("/api/v1/auth/login", status_code=200)
async def login(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[UserOut]:
    """Log in with `{"email", "password"}`.

    200 `{"id", "email"}` with the session cookie; 401 with the same message whether or not the account
    exists; 429 after 5 failed attempts for one email within 15 minutes.
    """
    credentials = await read_json(request, Credentials)
    key = failures_key(settings.namespace, credentials.email)
    # Counted before the password is checked, so parallel guesses cannot all pass a not-yet-raised
    # count; a successful log-in clears it.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=LOCK_SECONDS, nx=True)
        pipe.incr(key)
        _, attempts = await pipe.execute()
    if int(attempts) > MAX_FAILURES:
        raise HTTPException(status_code=429, detail="too many failed log-ins: try again in 15 minutes")
    row = await pool.fetchrow(SELECT_USER_BY_EMAIL, credentials.email.strip()) if credentials.email else None
    stored = row["password_hash"] if row is not None else dummy_hash()
    valid = await asyncio.to_thread(verify_password, credentials.password, stored)
    if row is None or not valid:
        log.info("login failed")
        raise NotAuthorizedException(detail=BAD_CREDENTIALS)
    await redis.delete(key)
    log.info("user logged in", user_id=row["id"])
    cookie = await start_session(redis, settings, row["id"])
    return Response(UserOut.of(row), cookies=[cookie])


@post("/api/v1/auth/logout", status_code=204)
async def logout(
    request: Request[Any, Any, Any], redis: NamedDependency[Redis], settings: NamedDependency[Settings]
) -> Response[None]:
    """End the session (if any) and clear its cookie: 204."""
    await end_session(redis, settings, request)
    response: Response[None] = Response(None, status_code=204)
    clear_cookie(response)
    return response


@get("/api/v1/auth/me")
async def me(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> UserOut:
    """The logged-in user: 200 `{"id", "email", "notifications_enabled", "email_status"}`, or 401."""
    user_id = await session_user(redis, settings, request)
    row = await pool.fetchrow(SELECT_USER, user_id) if user_id is not None else None
    if row is None:
        raise NotAuthorizedException(detail="not logged in")
    return UserOut.of(row)


@patch("/api/v1/auth/me")
async def update_me(
    request: Request[Any, Any, Any], user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> UserOut:
    """Change the user's preferences: `{"notifications_enabled": true|false}` turns all emails on or off
    (an unsubscribe link turns them off). 200 with the user; 422 when there is nothing to change."""
    preferences = await read_json(request, Preferences)
    if preferences.notifications_enabled is None:
        raise UnprocessableContent(detail="send notifications_enabled: true or false")
    row = await pool.fetchrow(SET_NOTIFICATIONS, user_id, preferences.notifications_enabled)
    if row is None:
        raise NotAuthorizedException(detail="log in first")
    log.info("notifications changed", user_id=user_id, enabled=preferences.notifications_enabled)
    return UserOut.of(row)
