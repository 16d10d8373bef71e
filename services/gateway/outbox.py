"""The development email outbox: what the notifier would have sent, readable in a browser or by scripts.

Registered only when EMAIL_BACKEND=outbox. Each student sees only the emails to their own address
(compared by canonical form). Who is asking is the session, or, since the first email to read is the
verification link of an account that cannot log in yet, the account's email and password sent with HTTP
Basic authentication (the browser asks for them itself; scripts use `curl -u email:password`), counted by
the log-in throttles.
"""

from __future__ import annotations

import base64
import binascii
import html
from datetime import datetime
from typing import Any
from urllib.parse import quote

import asyncpg
import msgspec
import structlog
from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.params import FromPath
from redis.asyncio import Redis

from services.gateway import emails
from services.gateway.auth import MAX_PASSWORD, SELECT_USER_BY_EMAIL, validate_email
from services.gateway.errors import html_page
from services.gateway.passwords import dummy_hash, verify_async
from services.gateway.resources import throttles_of
from services.gateway.sessions import session_user
from shared.settings import Settings

log = structlog.get_logger()

SELECT_CANONICAL = "SELECT email_canonical FROM app_user WHERE id = $1"
# Narrowed in SQL by the schema's own approximation of the canonical form (exact for ASCII), then checked
# exactly in Python.
_COLUMNS = "id, to_addr, subject, text_body, html_body, headers::text AS headers, created_at"
SELECT_OUTBOX = f"""
SELECT {_COLUMNS} FROM outbox_email WHERE app_user_email_canonical(to_addr) = $1
ORDER BY created_at DESC, id DESC LIMIT 100
"""
SELECT_ONE = f"SELECT {_COLUMNS} FROM outbox_email WHERE id = $1"

LOG_IN = "log in, or send your email and password (HTTP Basic), to read your emails"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="PickMyClass outbox", charset="UTF-8"'}
# An email's own HTML, shown framed in the outbox page: its inline styles may apply, nothing else may
# load or run, and only our own page may frame it.
_EMAIL_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
)


class OutboxEmail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    to: str
    subject: str
    created_at: datetime
    text_body: str
    html_body: str
    headers: dict[str, Any]

    @classmethod
    def of(cls, row: asyncpg.Record) -> OutboxEmail:
        return cls(
            id=row["id"],
            to=row["to_addr"],
            subject=row["subject"],
            created_at=row["created_at"],
            text_body=row["text_body"],
            html_body=row["html_body"],
            headers=msgspec.json.decode(row["headers"]),
        )


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(email, password) from an `Authorization: Basic ...` header, or None."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 4 * MAX_PASSWORD:
        return None
    try:
        email, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (email, password) if sep else None


async def _viewer(
    request: Request[Any, Any, Any], pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> str:
    """The canonical address whose emails the request may read, or 401."""
    user_id = await session_user(redis, settings, request)
    if user_id is not None:
        canonical: str | None = await pool.fetchval(SELECT_CANONICAL, user_id)
        if canonical is not None:
            return canonical
    credentials = basic_credentials(request.headers.get("authorization"))
    if credentials is None:
        raise NotAuthorizedException(detail=LOG_IN, headers=_CHALLENGE)
    email, password = credentials
    throttles = throttles_of(request)
    await throttles.login(request, emails.digest(email))
    lookup = validate_email(email) is None and len(password) <= MAX_PASSWORD
    row = await pool.fetchrow(SELECT_USER_BY_EMAIL, emails.canonical(email)) if lookup else None
    valid = await verify_async(password if lookup else "", row["password_hash"] if row else dummy_hash())
    if row is None or not valid:
        log.info("outbox log-in failed")
        raise NotAuthorizedException(detail=LOG_IN, headers=_CHALLENGE)
    await throttles.login_succeeded(request, emails.digest(email))
    return emails.canonical(email)


async def emails_of(pool: asyncpg.Pool, canonical: str) -> list[OutboxEmail]:
    """The latest 100 emails to `canonical`, newest first."""
    rows = await pool.fetch(SELECT_OUTBOX, canonical)
    return [OutboxEmail.of(row) for row in rows if emails.canonical(row["to_addr"]) == canonical]


def render_email(email: OutboxEmail) -> str:
    # The HTML body is its own document, framed and sandboxed: no scripts, no access to this page.
    return (
        '<section class="mail">'
        f"<h2>{html.escape(email.subject)}</h2>"
        f'<p class="meta">To {html.escape(email.to)} · {html.escape(email.created_at.isoformat())}</p>'
        f"<pre>{html.escape(email.text_body)}</pre>"
        f'<iframe sandbox="" title="HTML body of {html.escape(email.subject, quote=True)}"'
        f' src="/dev/outbox/{html.escape(quote(email.id, safe=""), quote=True)}"></iframe>'
        "</section>"
    )


@get("/dev/outbox", include_in_schema=False)
async def outbox_page(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[str]:
    """The latest 100 emails to the logged-in student (or the one named by HTTP Basic credentials), newest
    first, as HTML; 401 otherwise."""
    found = await emails_of(pool, await _viewer(request, pool, redis, settings))
    body = "".join(render_email(email) for email in found) or "<p>No emails yet.</p>"
    return html_page("Outbox", '<p><a href="/dev/outbox.json">JSON</a></p>' + body)


@get("/dev/outbox.json", include_in_schema=False)
async def outbox_json(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> list[OutboxEmail]:
    """The latest 100 emails to the logged-in student (or the one named by HTTP Basic credentials), newest
    first: `[{"id", "to", "subject", "created_at", "text_body", "html_body", "headers"}]`; 401 otherwise."""
    return await emails_of(pool, await _viewer(request, pool, redis, settings))


@get("/dev/outbox/{email_id:str}", include_in_schema=False)
async def outbox_email_html(
    request: Request[Any, Any, Any],
    email_id: FromPath[str],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[str]:
    """One email's HTML body, to the student it was sent to; 404 for anyone else's."""
    canonical = await _viewer(request, pool, redis, settings)
    row = await pool.fetchrow(SELECT_ONE, email_id) if len(email_id) <= 200 else None
    if row is None or emails.canonical(row["to_addr"]) != canonical:
        raise NotFoundException(detail="no such email")
    return Response(
        row["html_body"],
        media_type=MediaType.HTML,
        headers={"Content-Security-Policy": _EMAIL_POLICY, "Cache-Control": "no-store"},
    )
