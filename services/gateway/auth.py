"""Accounts: register, log in, log out, who am I.

Registration answers 202 to every well-formed request, whether the address is new or taken, and does its
work after the answer is sent (hashing, storing, asking the notifier for an email), so neither the answer
nor its timing says whether an account exists. The only difference is in the inbox: a new address gets a
verification link, a verified one "someone tried to register with your address", an unverified one a fresh
verification link. Only verified accounts may log in; the link itself logs the student in
(`services/gateway/accounts.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from nats.js import JetStreamContext
from redis.asyncio import Redis

from services.gateway.account_mail import address_allows, send_link, send_notice, throttle_client
from services.gateway.bodies import UnprocessableContent, read_json
from services.gateway.passwords import dummy_hash, hash_password, verify_password
from services.gateway.sessions import clear_cookie, end_session, session_user, start_session
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

_USER_COLUMNS = "id, email, notifications_enabled, email_status"
# A taken address (case-insensitively) inserts nothing and returns no row.
INSERT_USER = (
    "INSERT INTO app_user (email, password_hash) VALUES ($1, $2)"
    " ON CONFLICT ((lower(email))) DO NOTHING RETURNING id"
)
SELECT_USER_BY_EMAIL = (
    f"SELECT {_USER_COLUMNS}, password_hash, email_verified FROM app_user WHERE lower(email) = lower($1)"
)
SELECT_USER = f"SELECT {_USER_COLUMNS} FROM app_user WHERE id = $1"
SET_NOTIFICATIONS = f"UPDATE app_user SET notifications_enabled = $2 WHERE id = $1 RETURNING {_USER_COLUMNS}"

# One plain address: no spaces or control characters, and none of the characters that would make it a
# list of addresses.
_EMAIL = re.compile(r"^[^@\s,;<>\"\x00-\x1f\x7f]+@[^@\s,;<>\"\x00-\x1f\x7f]+\.[^@\s,;<>\".\x00-\x1f\x7f]+$")
MAX_EMAIL = 254
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
BAD_CREDENTIALS = "wrong email or password"
UNVERIFIED = "confirm your email address first: open the link we emailed you, or ask for a new one"
# The same answer for a new and a taken address: what happens next is in the inbox.
REGISTERED = "check your email to verify your address"
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


def validate_email(email: str) -> str | None:
    """The message for what is wrong with an address (already stripped), or None."""
    if not email:
        return "email is required"
    # isprintable() refuses invisible and direction-changing characters, which could disguise an address.
    if len(email) > MAX_EMAIL or not _EMAIL.match(email) or not email.isprintable():
        return "email must look like name@example.edu"
    return None


def validate_password(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    return None


def validate_credentials(credentials: Credentials) -> str | None:
    """The message for the first problem with a registration, or None."""
    return validate_email(credentials.email.strip()) or validate_password(credentials.password)


def failures_key(namespace: str, email: str) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"{namespace}:login-failures:{digest}"


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    message: str


@post("/api/v1/auth/register", status_code=202)
async def register(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    js: NamedDependency[JetStreamContext],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> Response[Accepted]:
    """Ask for an account with `{"email", "password"}`.

    202 `{"message"}` for every well-formed request, whether or not the address has an account; no session.
    The inbox gets a verification link (new address; the account waits unverified), or a note that someone
    tried to register it (verified account; at most one per 15 minutes). 422 `{"detail"}` when the email
    does not look like one address or the password is shorter than 8 or longer than 1024 characters; 429
    after too many requests from one network.
    """
    credentials = await read_json(request, Credentials)
    if (problem := validate_credentials(credentials)) is not None:
        raise UnprocessableContent(detail=problem)
    await throttle_client(redis, settings.namespace, request)
    job = BackgroundTask(
        _register,
        pool,
        redis,
        js,
        topology,
        settings.namespace,
        credentials.email.strip(),
        credentials.password,
    )
    return Response(Accepted(message=REGISTERED), status_code=202, background=job)


async def _register(
    pool: asyncpg.Pool,
    redis: Redis,
    js: JetStreamContext,
    topology: Topology,
    namespace: str,
    email: str,
    password: str,
) -> None:
    """After the answer: create the account or tell the address's owner. Failures are logged, never raised
    (the answer is gone); the student can register again or ask for a new link."""
    try:
        # Hashed for a taken address too: the work, like the answer, does not depend on the address.
        password_hash = await asyncio.to_thread(hash_password, password)
        async with pool.acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(INSERT_USER, email, password_hash)
            if user_id is not None:
                log.info("user registered", user_id=user_id)
                if await address_allows(redis, namespace, "verify", email):
                    await send_link(conn, js, topology, kind="verify", user_id=user_id, to=email)
                return
        row = await pool.fetchrow(SELECT_USER_BY_EMAIL, email)
        if row is None:  # deleted in between: nothing to tell anyone
            return
        if row["email_verified"]:
            if await address_allows(redis, namespace, "already_registered", row["email"]):
                await send_notice(js, topology, user_id=row["id"], to=row["email"])
        elif await address_allows(redis, namespace, "verify", row["email"]):
            # Never verified: a new link, and the password stays what it was. Replacing it would let anyone
            # set the password of an account its owner is about to verify.
            async with pool.acquire() as conn, conn.transaction():
                await send_link(conn, js, topology, kind="verify", user_id=row["id"], to=row["email"])
    except Exception:
        log.exception("registration could not be completed")


@post("/api/v1/auth/login", status_code=200)
async def login(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[UserOut]:
    """Log in with `{"email", "password"}`.

    200 `{"id", "email", ...}` with the session cookie; 401 with the same message whether or not the account
    exists; 403 when the password is right but the address was never verified (`POST
    /api/v1/auth/verification/resend` sends a new link); 429 after 5 failed attempts for one email within
    15 minutes.
    """
    credentials = await read_json(request, Credentials)
    email = credentials.email.strip()
    key = failures_key(settings.namespace, email)
    # Counted before the password is checked, so parallel guesses cannot all pass a not-yet-raised
    # count; a successful log-in clears it.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=LOCK_SECONDS, nx=True)
        pipe.incr(key)
        _, attempts = await pipe.execute()
    if int(attempts) > MAX_FAILURES:
        raise HTTPException(status_code=429, detail="too many failed log-ins: try again in 15 minutes")
    # What could never be an account's (NUL bytes PostgreSQL refuses, absurd lengths) is not looked up,
    # and is answered like a wrong password.
    lookup = bool(email) and validate_email(email) is None and len(credentials.password) <= MAX_PASSWORD
    row = await pool.fetchrow(SELECT_USER_BY_EMAIL, email) if lookup else None
    stored = row["password_hash"] if row is not None else dummy_hash()
    password = credentials.password if len(credentials.password) <= MAX_PASSWORD else ""
    valid = await asyncio.to_thread(verify_password, password, stored)
    if row is None or not valid:
        log.info("login failed")
        raise NotAuthorizedException(detail=BAD_CREDENTIALS)
    await redis.delete(key)
    if not row["email_verified"]:
        # Only after the right password: the 403 says nothing about addresses to someone who lacks it.
        log.info("login refused: email not verified", user_id=row["id"])
        raise PermissionDeniedException(detail=UNVERIFIED)
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
