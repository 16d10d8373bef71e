"""Accounts: register, log in, log out, who am I.

Registration answers 202 to every well-formed request, whether the address is new or taken, and does its
work after the answer is sent (hashing, storing, asking the notifier for an email), so neither the answer
nor its timing says whether an account exists. The only difference is in the inbox: a new address gets a
verification link, a verified one "someone tried to register with your address", an unverified one a fresh
verification link. Only verified accounts may log in; the link itself logs the student in
(`services/gateway/accounts.py`).
"""

from __future__ import annotations

import unicodedata
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.asyncio import Redis

from services.gateway import emails
from services.gateway.account_mail import issue_link, send, send_notice
from services.gateway.admins import DISABLED_MESSAGE, is_disabled
from services.gateway.bodies import (
    BAD_JSON,
    BODY_TOO_LARGE,
    EMPTY_BODY,
    NOT_JSON_TYPE,
    UnprocessableContent,
    answers,
    json_body,
    read_json,
)
from services.gateway.live import revoke
from services.gateway.passwords import dummy_hash, hash_async, needs_rehash, verify_async
from services.gateway.resources import throttles_of
from services.gateway.sessions import (
    clear_cookie,
    end_all_sessions,
    end_session,
    session_ref,
    session_user,
    start_session,
)
from services.gateway.throttle import Throttles
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

_USER_COLUMNS = "id, email, notifications_enabled, email_status"
# A taken address (by its canonical form) inserts nothing and returns no row.
INSERT_USER = (
    "INSERT INTO app_user (email, email_canonical, password_hash) VALUES ($1, $2, $3)"
    " ON CONFLICT (email_canonical) DO NOTHING RETURNING id"
)
# $1 is always `emails.canonical(...)` of what the student typed.
SELECT_USER_BY_EMAIL = (
    f"SELECT {_USER_COLUMNS}, password_hash, email_verified FROM app_user WHERE email_canonical = $1"
)
SELECT_USER = f"SELECT {_USER_COLUMNS} FROM app_user WHERE id = $1"
SET_NOTIFICATIONS = f"UPDATE app_user SET notifications_enabled = $2 WHERE id = $1 RETURNING {_USER_COLUMNS}"
# Only if the hash is still the one just verified: a password changed meanwhile stays changed.
REHASH = "UPDATE app_user SET password_hash = $3 WHERE id = $1 AND password_hash = $2"

MIN_PASSWORD, MAX_PASSWORD = 8, 1024
BAD_CREDENTIALS = "wrong email or password"
UNVERIFIED = "confirm your email address first: open the link we emailed you, or ask for a new one"
# The same answer for a new and a taken address: what happens next is in the inbox.
REGISTERED = "check your email to verify your address"


# The limits `validate_credentials` enforces, for the OpenAPI document; no control characters in a password.
EMAIL_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    format=OpenAPIFormat.EMAIL,
    max_length=emails.MAX_EMAIL,
    examples=["sparky@asu.edu"],
)
PASSWORD_SCHEMA = Schema(
    type=OpenAPIType.STRING,
    min_length=MIN_PASSWORD,
    max_length=MAX_PASSWORD,
    pattern="^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
    examples=["correct horse battery"],
)
# Log-in refuses nothing by shape: what could never be an account's is a wrong password (401).
_LOGIN_BODY = json_body(
    {
        "email": Schema(type=OpenAPIType.STRING, examples=EMAIL_SCHEMA.examples),
        "password": Schema(type=OpenAPIType.STRING, examples=PASSWORD_SCHEMA.examples),
    },
    ["email", "password"],
    "The address and password the account was registered with.",
)
TOO_MANY_ACCOUNT_REQUESTS = (
    "30 requests to register or for account emails within 15 minutes from one network."
)


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
    """The message for what is wrong with an address, or None (`services/gateway/emails.py` says what an
    address may hold)."""
    return emails.problem(email)


def validate_password(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    # NUL and other control characters: no keyboard types them, and some systems cut a string at NUL.
    if any(unicodedata.category(char) == "Cc" for char in password):
        return "password must not contain control characters"
    return None


def validate_credentials(credentials: Credentials) -> str | None:
    """The message for the first problem with a registration, or None."""
    return validate_email(credentials.email) or validate_password(credentials.password)


async def replace_session(
    request: Request[Any, Any, Any],
    redis: Redis,
    nc: Client,
    settings: Settings,
    topology: Topology,
    user_id: int,
) -> Cookie:
    """Log `user_id` in: the session the browser had (anyone's) ends with its live streams, and a new one
    starts."""
    replaced = await end_session(redis, settings, request)
    if replaced is not None:
        await revoke(nc, topology, "session", session_ref(replaced))
    return await start_session(redis, settings, user_id)


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    message: str


@post(
    "/api/v1/auth/register",
    status_code=202,
    operation_class=json_body(
        {"email": EMAIL_SCHEMA, "password": PASSWORD_SCHEMA},
        ["email", "password"],
        "The address to verify, and a password of 8 to 1024 characters without control characters.",
    ),
    responses=answers(
        {
            400: BAD_JSON,
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "Not one email address; a password too short, too long or with control characters; a field"
            " that is not a string.",
            429: TOO_MANY_ACCOUNT_REQUESTS,
        }
    ),
)
async def register(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> Response[Accepted]:
    """Ask for an account with `{"email", "password"}`.

    202 `{"message"}` for every well-formed request, whether or not the address has an account; no session.
    The inbox gets a verification link (new address; the account waits unverified), or a note that someone
    tried to register it (verified account; at most one per 15 minutes). 422 `{"detail"}` when the email
    does not look like one address or the password is shorter than 8 or longer than 1024 characters (or
    holds control characters); 429 with `Retry-After` after too many requests from one network.
    """
    credentials = await read_json(request, Credentials)
    if (problem := validate_credentials(credentials)) is not None:
        raise UnprocessableContent(detail=problem)
    throttles = throttles_of(request)
    await throttles.account_request(request)
    job = BackgroundTask(
        _register, pool, throttles, js, topology, credentials.email.strip(), credentials.password
    )
    return Response(Accepted(message=REGISTERED), status_code=202, background=job)


async def _register(
    pool: asyncpg.Pool,
    throttles: Throttles,
    js: JetStreamContext,
    topology: Topology,
    email: str,
    password: str,
) -> None:
    """After the answer: create the account or tell the address's owner. Failures are logged, never raised
    (the answer is gone); the student can register again or ask for a new link."""
    canonical = emails.canonical(email)
    address = emails.digest(email)
    try:
        # Hashed for a taken address too: the work, like the answer, does not depend on the address.
        password_hash = await hash_async(password)
        link = None
        async with pool.acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(INSERT_USER, email, canonical, password_hash)
            if user_id is not None and await throttles.address_allows("verify", address):
                link = await issue_link(conn, kind="verify", user_id=user_id, to=email)
        if user_id is not None:
            log.info("user registered", user_id=user_id)
            if link is not None:
                await send(js, topology, link)
            return
        row = await pool.fetchrow(SELECT_USER_BY_EMAIL, canonical)
        if row is None:  # deleted in between: nothing to tell anyone
            return
        if row["email_verified"]:
            if await throttles.address_allows("already_registered", address):
                await send_notice(js, topology, user_id=row["id"], to=row["email"])
        elif await throttles.address_allows("verify", address):
            # Never verified: a new link, and the password stays what it was. Replacing it would let anyone
            # set the password of an account its owner is about to verify.
            async with pool.acquire() as conn, conn.transaction():
                link = await issue_link(conn, kind="verify", user_id=row["id"], to=row["email"])
            await send(js, topology, link)
    except Exception:
        log.exception("registration could not be completed")


@post(
    "/api/v1/auth/login",
    status_code=200,
    operation_class=_LOGIN_BODY,
    responses=answers(
        {
            400: BAD_JSON,
            401: "Wrong email or password (the same answer whether or not the account exists).",
            403: "The right password, but an address never verified or an account an admin disabled.",
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "A field that is not a string.",
            429: "20 attempts a minute from one network, or 5 failed ones at one account within 15 minutes.",
            503: "Too many passwords are being checked at once: retry after Retry-After.",
        }
    ),
)
async def login(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> Response[UserOut]:
    """Log in with `{"email", "password"}`.

    200 `{"id", "email", ...}` with the session cookie (the session this browser had ends); 401 with the
    same message whether or not the account exists; 403 when the password is right but the address was
    never verified (`POST /api/v1/auth/verification/resend` sends a new link) or an admin disabled the
    account; 429 with `Retry-After` after
    20 attempts a minute from one network, or 5 attempts at one account from one network within 15
    minutes without a success (others can still log in to that account).
    """
    credentials = await read_json(request, Credentials)
    email = credentials.email.strip()
    account = emails.digest(email)
    throttles = throttles_of(request)
    # Counted before the password is checked, so parallel guesses cannot all pass a not-yet-raised count.
    await throttles.login(request, account)
    # What could never be an account's (NUL bytes, look-alike characters, absurd lengths) is not looked
    # up, and is answered like a wrong password.
    lookup = validate_email(email) is None and len(credentials.password) <= MAX_PASSWORD
    row = await pool.fetchrow(SELECT_USER_BY_EMAIL, emails.canonical(email)) if lookup else None
    stored: str = row["password_hash"] if row is not None else dummy_hash()
    password = credentials.password if len(credentials.password) <= MAX_PASSWORD else ""
    valid = await verify_async(password, stored)
    if row is None or not valid:
        log.info("login failed")
        raise NotAuthorizedException(detail=BAD_CREDENTIALS)
    await throttles.login_succeeded(request, account)
    if not row["email_verified"]:
        # Only after the right password: the 403 says nothing about addresses to someone who lacks it.
        log.info("login refused: email not verified", user_id=row["id"])
        raise PermissionDeniedException(detail=UNVERIFIED)
    if await is_disabled(pool, row["id"]):
        log.info("login refused: account disabled", user_id=row["id"])
        raise PermissionDeniedException(detail=DISABLED_MESSAGE)
    log.info("user logged in", user_id=row["id"])
    cookie = await replace_session(request, redis, nc, settings, topology, row["id"])
    rehash = BackgroundTask(_rehash, pool, row["id"], stored, password) if needs_rehash(stored) else None
    return Response(UserOut.of(row), cookies=[cookie], background=rehash)


async def _rehash(pool: asyncpg.Pool, user_id: int, stored: str, password: str) -> None:
    """After the answer: replace a hash of an older scheme or cost by a current one (only the log-in,
    which holds the password, can)."""
    try:
        await pool.execute(REHASH, user_id, stored, await hash_async(password))
        log.info("password rehashed", user_id=user_id)
    except Exception:
        log.exception("password could not be rehashed")


@post(
    "/api/v1/auth/logout",
    status_code=204,
    operation_class=EMPTY_BODY,
    responses=answers({413: BODY_TOO_LARGE, 415: NOT_JSON_TYPE}),
)
async def logout(
    request: Request[Any, Any, Any],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> Response[None]:
    """End the session (if any) and its live streams, and clear its cookie: 204."""
    ended = await end_session(redis, settings, request)
    if ended is not None:
        await revoke(nc, topology, "session", session_ref(ended))
    response: Response[None] = Response(None, status_code=204)
    clear_cookie(response)
    return response


@post(
    "/api/v1/auth/logout-everywhere",
    status_code=204,
    operation_class=EMPTY_BODY,
    responses=answers({401: "Not logged in.", 413: BODY_TOO_LARGE, 415: NOT_JSON_TYPE}),
)
async def logout_everywhere(
    user_id: NamedDependency[int],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> Response[None]:
    """End every session of the logged-in student, on every device, with their live streams, and clear
    this browser's cookie: 204; 401 when not logged in."""
    await end_all_sessions(redis, settings, user_id)
    await revoke(nc, topology, "user", str(user_id))
    log.info("logged out everywhere", user_id=user_id)
    response: Response[None] = Response(None, status_code=204)
    clear_cookie(response)
    return response


@get("/api/v1/auth/me", responses=answers({401: "Not logged in."}))
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


@patch(
    "/api/v1/auth/me",
    operation_class=json_body(
        {"notifications_enabled": Schema(type=OpenAPIType.BOOLEAN)},
        ["notifications_enabled"],
        "Whether PickMyClass sends this account any email.",
    ),
    responses=answers(
        {
            400: BAD_JSON,
            401: "Not logged in.",
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "notifications_enabled is missing or not true or false.",
        }
    ),
)
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
