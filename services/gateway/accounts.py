"""Email verification and password reset: the emailed links and the requests for new ones.

- `GET /verify?token=…` spends the single-use token, marks the address verified and logs the student in.
- `POST /api/v1/auth/verification/resend` and `POST /api/v1/auth/password/forgot` answer 202 whatever the
  address, and do their work after the answer is sent, so neither says whether an account exists.
- `GET /reset?token=…` shows a form without spending anything (mail scanners fetch links);
  `POST /api/v1/auth/password/reset` spends the token, sets the password and ends every session of the user.

Every link problem is a page (or a JSON message) that says what to do next, never an error trace.
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import MediaType, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromQuery
from litestar.response import Redirect
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.asyncio import Redis

from services.gateway import emails
from services.gateway.account_mail import (
    Spent,
    TokenPurpose,
    Unusable,
    issue_link,
    send,
    spend_token,
    token_state,
)
from services.gateway.auth import (
    EMAIL_SCHEMA,
    PASSWORD_SCHEMA,
    SELECT_USER_BY_EMAIL,
    TOO_MANY_ACCOUNT_REQUESTS,
    Accepted,
    replace_session,
    validate_email,
    validate_password,
)
from services.gateway.bodies import (
    BAD_JSON,
    BODY_TOO_LARGE,
    NOT_JSON_TYPE,
    UnprocessableContent,
    answers,
    json_body,
    read_json,
)
from services.gateway.errors import html_page
from services.gateway.live import revoke
from services.gateway.pages import STATIC
from services.gateway.passwords import hash_async
from services.gateway.resources import throttles_of
from services.gateway.sessions import clear_cookie, end_all_sessions
from services.gateway.throttle import Throttles
from shared.settings import Settings
from shared.streams import Topology
from shared.tokens import ACCOUNT_PURPOSES, MAX_TOKEN_LENGTH, ExpiredToken, InvalidToken, verify

log = structlog.get_logger()

RESENT = "if this address has an account waiting for verification, a new link is on its way"
FORGOT = "if this address has an account, a link to choose a new password is on its way"

VERIFIED = "UPDATE app_user SET email_verified = true WHERE id = $1"
# A reset link proves the address too: an account that was never verified is verified by it.
SET_PASSWORD = (
    "UPDATE app_user SET password_hash = $2, email_verified = true WHERE id = $1 RETURNING email_canonical"
)
# Once one link of a kind worked, the user's other links of that kind are spent too.
SPEND_OTHERS = (
    "UPDATE account_token SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL"
)

# Links carry a token in their URL: no page they open sends it elsewhere, and none is cached.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

# (status, page title, what to do) per problem and kind of link; JSON answers use the same words.
_PROBLEMS: dict[tuple[TokenPurpose, str], tuple[int, str, str]] = {
    ("verify", "invalid"): (
        400,
        "This link is not valid",
        "This verification link is not complete or not ours. Open the link from the email again, or log in "
        "with your email and password to get a new one.",
    ),
    ("verify", "expired"): (
        410,
        "This link has expired",
        "Verification links work for 24 hours. Log in with your email and password to get a new one.",
    ),
    ("verify", "used"): (
        410,
        "This link was already used",
        "If you opened it before, your address is verified: log in with your email and password. If not, "
        "logging in offers to send a new link.",
    ),
    ("reset", "invalid"): (
        400,
        "This link is not valid",
        "This password reset link is not complete or not ours. Open the link from the email again, or ask "
        "for a new one.",
    ),
    ("reset", "expired"): (
        410,
        "This link has expired",
        "Password reset links work for one hour. Ask for a new one.",
    ),
    ("reset", "used"): (
        410,
        "This link was already used",
        "Each password reset link works once. If you did not change your password with it, ask for a new "
        "one.",
    ),
}
_NEXT = {"verify": ("/", "Log in"), "reset": ("/#forgot", "Ask for a new link")}


class EmailOnly(msgspec.Struct, kw_only=True):
    email: str = ""


class NewPassword(msgspec.Struct, kw_only=True):
    token: str = ""
    password: str = ""


def read_link(settings: Settings, kind: TokenPurpose, token: str | None) -> str | Unusable:
    """The nonce a link's token names, or why the token is unusable before the database is asked."""
    if not token:
        return Unusable("invalid")
    try:
        return verify(settings.require_secret_key(), ACCOUNT_PURPOSES[kind], token)
    except ExpiredToken:
        return Unusable("expired")
    except InvalidToken:
        return Unusable("invalid")


def problem_page(kind: TokenPurpose, problem: Unusable) -> Response[str]:
    status, title, advice = _PROBLEMS[(kind, problem.reason)]
    href, label = _NEXT[kind]
    body = f'<p>{html.escape(advice)}</p><p><a href="{href}">{html.escape(label)}</a></p>'
    page = html_page(title, body, status_code=status)
    page.headers.update(_PRIVATE)
    return page


# The API's answers for a reset token (lower-case phrases, like every API message; the page capitalises).
_RESET_ERRORS = {
    "invalid": "this reset link is not valid: ask for a new one",
    "expired": "this reset link has expired (they work for one hour): ask for a new one",
    "used": "this reset link was already used: ask for a new one",
}


def reset_error(problem: Unusable) -> HTTPException:
    status = _PROBLEMS[("reset", problem.reason)][0]
    return HTTPException(status_code=status, detail=_RESET_ERRORS[problem.reason])


@get("/verify", include_in_schema=False)
async def verify_email(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
    token: FromQuery[str | None] = None,
) -> Response[Any]:
    """The emailed verification link: marks the address verified, logs the student in and sends them to
    the page (303 to `/?verified=1`); a page saying what to do for an invalid (400), expired or used (410)
    link."""
    nonce = read_link(settings, "verify", token)
    if isinstance(nonce, Unusable):
        return problem_page("verify", nonce)
    async with pool.acquire() as conn, conn.transaction():
        outcome = await spend_token(conn, "verify", nonce)
        if isinstance(outcome, Spent):
            await conn.execute(VERIFIED, outcome.user_id)
            await conn.execute(SPEND_OTHERS, outcome.user_id, "verify")
    if isinstance(outcome, Unusable):
        return problem_page("verify", outcome)
    log.info("email verified", user_id=outcome.user_id)
    cookie = await replace_session(request, redis, nc, settings, topology, outcome.user_id)
    return Redirect("/?verified=1", status_code=303, cookies=[cookie], headers=_PRIVATE)


@cache
def _reset_html() -> str:
    return (STATIC / "reset.html").read_text(encoding="utf-8")


@get("/reset", include_in_schema=False)
async def reset_page(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """The emailed reset link: a form for the new password (the token is spent only when it is sent), or a
    page saying what to do for an invalid (400), expired or used (410) link."""
    nonce = read_link(settings, "reset", token)
    problem = nonce if isinstance(nonce, Unusable) else await token_state(pool, "reset", nonce)
    if problem is not None:
        return problem_page("reset", problem)
    return Response(_reset_html(), media_type=MediaType.HTML, headers=_PRIVATE)


@post(
    "/api/v1/auth/password/reset",
    status_code=204,
    operation_class=json_body(
        {
            "token": Schema(type=OpenAPIType.STRING, max_length=MAX_TOKEN_LENGTH),
            "password": PASSWORD_SCHEMA,
        },
        ["token", "password"],
        "The `token` of the reset link (`/reset?token=…`), and the new password.",
    ),
    responses=answers(
        {
            400: "The body is not JSON, or the token is not valid.",
            410: "The link was already used, or has expired (they work for one hour).",
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "A password too short, too long or with control characters; a field that is not a string.",
            503: "Too many passwords are being hashed at once: retry after Retry-After.",
        }
    ),
)
async def reset_password(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
    topology: NamedDependency[Topology],
) -> Response[None]:
    """Set a new password with `{"token", "password"}` from a reset link.

    204, and every session of the user ends (this browser's too: log in with the new password); 400 for an
    invalid token, 410 for a used or expired one, 422 for a password shorter than 8 or longer than 1024
    characters, each with a message.
    """
    body = await read_json(request, NewPassword)
    nonce = read_link(settings, "reset", body.token)
    if isinstance(nonce, Unusable):
        raise reset_error(nonce)
    if (problem := validate_password(body.password)) is not None:
        raise UnprocessableContent(detail=problem)
    # Checked before hashing, so a dead link costs no hash; spent below in one statement all the same.
    if (dead := await token_state(pool, "reset", nonce)) is not None:
        raise reset_error(dead)
    password_hash = await hash_async(body.password)
    email = None
    async with pool.acquire() as conn, conn.transaction():
        outcome = await spend_token(conn, "reset", nonce)
        if isinstance(outcome, Spent):
            email = await conn.fetchval(SET_PASSWORD, outcome.user_id, password_hash)
            await conn.execute(SPEND_OTHERS, outcome.user_id, "reset")
    if isinstance(outcome, Unusable):
        raise reset_error(outcome)
    # After the commit: a session started from here on needs the new password.
    await end_all_sessions(redis, settings, outcome.user_id)
    await revoke(nc, topology, "user", str(outcome.user_id))
    if email is not None:
        # Locked out by failed guesses from this network, then reset: the new password works at once.
        await throttles_of(request).login_succeeded(request, emails.digest(email))
    log.info("password reset", user_id=outcome.user_id)
    response: Response[None] = Response(None, status_code=204, headers=_PRIVATE)
    clear_cookie(response)
    return response


async def _read_address(request: Request[Any, Any, Any]) -> str:
    email = (await read_json(request, EmailOnly)).email
    if (problem := validate_email(email)) is not None:
        raise UnprocessableContent(detail=problem)
    return email.strip()


_ADDRESS_BODY = json_body({"email": EMAIL_SCHEMA}, ["email"], "The address of the account.")
_ADDRESS_ANSWERS = answers(
    {
        400: BAD_JSON,
        413: BODY_TOO_LARGE,
        415: NOT_JSON_TYPE,
        422: "Not one email address, or not a string.",
        429: TOO_MANY_ACCOUNT_REQUESTS,
    }
)


@post(
    "/api/v1/auth/verification/resend",
    status_code=202,
    operation_class=_ADDRESS_BODY,
    responses=_ADDRESS_ANSWERS,
)
async def resend_verification(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> Response[Accepted]:
    """Ask for a new verification link with `{"email"}`: 202 `{"message"}` whatever the address (an
    unverified account gets a link, at most 3 an hour); 422 for what is not an address; 429 with `Retry-After`
    after too many requests from one network."""
    email = await _read_address(request)
    throttles = throttles_of(request)
    await throttles.account_request(request)
    job = BackgroundTask(_mail_link, "verify", pool, throttles, js, topology, email)
    return Response(Accepted(message=RESENT), status_code=202, background=job)


@post(
    "/api/v1/auth/password/forgot",
    status_code=202,
    operation_class=_ADDRESS_BODY,
    responses=_ADDRESS_ANSWERS,
)
async def forgot_password(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> Response[Accepted]:
    """Ask for a password reset link with `{"email"}`: 202 `{"message"}` whatever the address (an account
    gets a link valid for an hour, at most 3 an hour); 422 for what is not an address; 429 with `Retry-After`
    after too many requests from one network."""
    email = await _read_address(request)
    throttles = throttles_of(request)
    await throttles.account_request(request)
    job = BackgroundTask(_mail_link, "reset", pool, throttles, js, topology, email)
    return Response(Accepted(message=FORGOT), status_code=202, background=job)


async def _mail_link(
    kind: TokenPurpose,
    pool: asyncpg.Pool,
    throttles: Throttles,
    js: JetStreamContext,
    topology: Topology,
    email: str,
) -> None:
    """After the answer: the link, if the address has an account that may get one. Failures are logged,
    never raised (the answer is gone); the student can ask again."""
    try:
        row = await pool.fetchrow(SELECT_USER_BY_EMAIL, emails.canonical(email))
        if row is None or (kind == "verify" and row["email_verified"]):
            return
        if not await throttles.address_allows(kind, emails.digest(email)):
            log.info("account email throttled", kind=kind, user_id=row["id"])
            return
        async with pool.acquire() as conn, conn.transaction():
            link = await issue_link(conn, kind=kind, user_id=row["id"], to=row["email"])
        await send(js, topology, link)
    except Exception:
        log.exception("account email could not be requested", kind=kind)
