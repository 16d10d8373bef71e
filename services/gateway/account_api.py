"""The student's own account: export everything we hold, delete it all, and the alert choices new watches
start with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog
from limits import RateLimitItemPerMinute
from litestar import Request, Response, delete, get, patch
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from msgspec import UNSET, UnsetType
from nats.aio.client import Client
from redis.asyncio import Redis

from services.gateway.admins import Db
from services.gateway.auth import PASSWORD_SCHEMA
from services.gateway.bodies import (
    BAD_JSON,
    BODY_TOO_LARGE,
    NOT_JSON_TYPE,
    ErrorBody,
    UnprocessableContent,
    answers,
    json_body,
    read_json,
)
from services.gateway.live import revoke
from services.gateway.passwords import HashingBusy, verify_async
from services.gateway.resources import throttles_of
from services.gateway.sessions import clear_cookie, end_all_sessions
from services.gateway.watches import alerts_of
from shared.alerts import ALERT_KINDS
from shared.asu import term_label
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

MAX_BODY = 16 * 1024
MAX_PASSWORD = 1024
# Deleting an account asks for the password: a stolen session must not make it a password oracle.
DELETE_ATTEMPTS = RateLimitItemPerMinute(5, 15)
WRONG_PASSWORD = "wrong password: your account was not deleted"
TOO_MANY_ATTEMPTS = "too many attempts to delete this account: try again in a few minutes"
BUSY = "too many password checks at once: try again in a moment"
BUSY_RETRY_AFTER = "2"
EXPORT_FILENAME = "pickmyclass-export.json"


def problem(description: str) -> ResponseSpec:
    """One error answer, for modules that name them one by one (`answers` names them by status)."""
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


NOT_LOGGED_IN = problem("Not logged in")


# --- alert choices for new watches ----------------------------------------------------------------------

SELECT_DEFAULT_ALERTS = "SELECT default_alerts::text FROM app_user WHERE id = $1"
# Merged into what is stored: kinds the request leaves out keep their choice, or keep following the
# global default if the student never chose them.
MERGE_DEFAULT_ALERTS = """
UPDATE app_user SET default_alerts = COALESCE(default_alerts, '{}'::jsonb) || $2::jsonb
WHERE id = $1
RETURNING default_alerts::text
"""

# Every alert kind is an optional true/false field; any other field is refused with its name.
AlertDefaultsBody = msgspec.defstruct(
    "AlertDefaultsBody",
    [(kind, bool | UnsetType, UNSET) for kind in ALERT_KINDS],
    kw_only=True,
    forbid_unknown_fields=True,
)


def chosen_alerts(body: msgspec.Struct) -> dict[str, bool]:
    """The kinds a request names, with their choice."""
    return {kind: value for kind in ALERT_KINDS if isinstance(value := getattr(body, kind), bool)}


async def default_alerts(db: Db, user_id: int) -> dict[str, bool]:
    """The alert choices a new watch of this student starts with: every kind of
    `shared.alerts.ALERT_KINDS`, the student's choice where there is one, else the global default."""
    return alerts_of(await db.fetchval(SELECT_DEFAULT_ALERTS, user_id))


@get(
    "/api/v1/me/alerts",
    tags=["settings"],
    responses={401: NOT_LOGGED_IN},
)
async def get_default_alerts(
    user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> dict[str, bool]:
    """The alerts new watches start with: 200 `{"seat_opened": true, "instructor_changed": true,
    "closed_again": false, "waitlist_opened": false}` (every kind); 401 when not logged in."""
    return await default_alerts(pool, user_id)


@patch(
    "/api/v1/me/alerts",
    tags=["settings"],
    request_max_body_size=MAX_BODY,
    operation_class=json_body(
        {kind: Schema(type=OpenAPIType.BOOLEAN) for kind in ALERT_KINDS},
        [],
        "The alert kinds to turn on or off (at least one); kinds left out keep their choice.",
        closed=True,
        min_properties=1,
    ),
    responses=answers(
        {
            400: BAD_JSON,
            401: "Not logged in.",
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "An unknown alert kind, a value that is not true or false, or no kind at all.",
        }
    ),
)
async def update_default_alerts(
    request: Request[Any, Any, Any], user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> dict[str, bool]:
    """Choose the alerts new watches start with: body `{"closed_again": true}`, any subset of
    `seat_opened`, `instructor_changed`, `closed_again`, `waitlist_opened`; kinds left out keep their choice.
    Watches that exist keep theirs (`PATCH /api/v1/watches/{id}` changes one).

    200 with every kind (shape of `GET /api/v1/me/alerts`); 422 for an unknown kind, a value that is not
    true/false, or an empty object; 401 when not logged in.
    """
    chosen = chosen_alerts(await read_json(request, AlertDefaultsBody))
    if not chosen:
        raise UnprocessableContent(detail=f"send at least one alert kind: {', '.join(ALERT_KINDS)}")
    stored = await pool.fetchval(MERGE_DEFAULT_ALERTS, user_id, msgspec.json.encode(chosen).decode())
    if stored is None:
        raise NotAuthorizedException(detail="log in first")
    log.info("default alerts changed", user_id=user_id, alerts=chosen)
    return alerts_of(stored)


# --- export ---------------------------------------------------------------------------------------------

SELECT_ACCOUNT = """
SELECT email, created_at, notifications_enabled, email_status, email_verified, default_alerts::text
FROM app_user WHERE id = $1
"""
SELECT_WATCHES = """
SELECT w.id, w.term, w.class_nbr, w.created_at, w.alerts::text AS alerts, s.subject, s.catalog_nbr, s.title
FROM watch AS w
LEFT JOIN section AS s ON s.term = w.term AND s.class_nbr = w.class_nbr
WHERE w.user_id = $1
ORDER BY w.created_at, w.id
"""
SELECT_NOTIFICATIONS = """
SELECT n.watch_id, n.kind, n.term, n.class_nbr, n.claimed_at, n.sent_at, n.delivered_at, n.bounced_at,
       n.status, s.subject, s.catalog_nbr, s.title
FROM user_notification AS n
LEFT JOIN section AS s ON s.term = n.term AND s.class_nbr = n.class_nbr
WHERE n.user_id = $1
ORDER BY n.claimed_at, n.watch_id, n.kind, n.change_key
"""


class AccountExport(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    created_at: datetime
    notifications_enabled: bool
    email_status: str
    verified: bool
    default_alerts: dict[str, bool]


class WatchExport(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    term: str
    term_label: str
    class_nbr: str
    course: str | None
    title: str | None
    created_at: datetime
    alerts: dict[str, bool]


class NotificationExport(msgspec.Struct, frozen=True, kw_only=True):
    watch_id: int
    kind: str
    term: str
    term_label: str
    class_nbr: str
    course: str | None
    title: str | None
    claimed_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    bounced_at: datetime | None
    status: str


class Export(msgspec.Struct, frozen=True, kw_only=True):
    exported_at: datetime
    account: AccountExport
    watches: list[WatchExport]
    notifications: list[NotificationExport]


def course_of(row: asyncpg.Record) -> tuple[str | None, str | None]:
    """Course and title from the section's latest stored state; (None, None) when it was never found."""
    if row["subject"] is None:
        return None, None
    return f"{row['subject']} {row['catalog_nbr']}", row["title"]


def watch_export(row: asyncpg.Record) -> WatchExport:
    course, title = course_of(row)
    return WatchExport(
        id=row["id"],
        term=row["term"],
        term_label=term_label(row["term"]),
        class_nbr=row["class_nbr"],
        course=course,
        title=title,
        created_at=row["created_at"],
        alerts=alerts_of(row["alerts"]),
    )


def notification_export(row: asyncpg.Record) -> NotificationExport:
    course, title = course_of(row)
    return NotificationExport(
        watch_id=row["watch_id"],
        kind=row["kind"],
        term=row["term"],
        term_label=term_label(row["term"]),
        class_nbr=row["class_nbr"],
        course=course,
        title=title,
        claimed_at=row["claimed_at"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        bounced_at=row["bounced_at"],
        status=row["status"],
    )


def account_export(row: asyncpg.Record) -> AccountExport:
    return AccountExport(
        email=row["email"],
        created_at=row["created_at"],
        notifications_enabled=row["notifications_enabled"],
        email_status=row["email_status"],
        verified=row["email_verified"],
        default_alerts=alerts_of(row["default_alerts"]),
    )


@get(
    "/api/v1/me/export",
    tags=["settings"],
    responses={401: NOT_LOGGED_IN},
)
async def export_account(
    user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> Response[Export]:
    """Everything PickMyClass holds about the logged-in student, as a JSON file to download
    (`Content-Disposition: attachment`): 200 `{"exported_at", "account": {"email", "created_at",
    "notifications_enabled", "email_status", "verified", "default_alerts"}, "watches": [{"id", "term",
    "term_label", "class_nbr", "course", "title", "created_at", "alerts"}], "notifications": [{"watch_id",
    "kind", "term", "term_label", "class_nbr", "course", "title", "claimed_at", "sent_at", "delivered_at",
    "bounced_at", "status"}]}`, oldest first. No password hash and no tokens. 401 when not logged in."""
    # One snapshot: a watch deleted meanwhile is in all three parts or in none.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        account = await conn.fetchrow(SELECT_ACCOUNT, user_id)
        if account is None:
            raise NotAuthorizedException(detail="log in first")
        watches = await conn.fetch(SELECT_WATCHES, user_id)
        notifications = await conn.fetch(SELECT_NOTIFICATIONS, user_id)
        now: datetime = await conn.fetchval("SELECT now()")
    log.info("account exported", user_id=user_id, watches=len(watches), notifications=len(notifications))
    export = Export(
        exported_at=now,
        account=account_export(account),
        watches=[watch_export(row) for row in watches],
        notifications=[notification_export(row) for row in notifications],
    )
    return Response(
        export,
        headers={"Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'},
    )


# --- deletion -------------------------------------------------------------------------------------------

SELECT_PASSWORD = "SELECT email, password_hash FROM app_user WHERE id = $1"
# Watches, their notifications and account tokens go with the user (ON DELETE CASCADE, migrations 0001
# and 0005); the development outbox keeps copies of emails by address, so those go by address.
DELETE_OUTBOX = "DELETE FROM outbox_email WHERE lower(to_addr) = lower($1)"
DELETE_USER = "DELETE FROM app_user WHERE id = $1"


class PasswordConfirm(msgspec.Struct, kw_only=True):
    password: str = ""


def validate_confirm(confirm: PasswordConfirm) -> str | None:
    if not confirm.password:
        return 'send your password to confirm: {"password": "..."}'
    if len(confirm.password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    return None


@delete(
    "/api/v1/me",
    tags=["settings"],
    status_code=204,
    request_max_body_size=MAX_BODY,
    operation_class=json_body(
        {
            "password": Schema(
                type=OpenAPIType.STRING,
                min_length=1,
                max_length=MAX_PASSWORD,
                examples=PASSWORD_SCHEMA.examples,
            )
        },
        ["password"],
        "The account's password, to confirm.",
    ),
    responses=answers(
        {
            400: BAD_JSON,
            401: "Not logged in.",
            403: "Wrong password: nothing was deleted.",
            413: BODY_TOO_LARGE,
            415: NOT_JSON_TYPE,
            422: "No password sent, one longer than 1024 characters, or not a string.",
            429: "5 attempts within 15 minutes: wait for the Retry-After header's seconds.",
            503: "The gateway is checking too many passwords at once: retry after Retry-After.",
        }
    ),
)
async def delete_account(
    request: Request[Any, Any, Any],
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
) -> Response[None]:
    """Delete the logged-in student's account and everything with it: body `{"password": "..."}`.

    204 with the session cookie cleared: the account, its watches and their alert history are gone, and
    every session of the account is ended. 403 for a wrong password; 422 without one; 429 after 5 attempts
    within 15 minutes (`Retry-After`); 503 with `Retry-After` when the gateway is saturated; 401 when not
    logged in.
    """
    confirm = await read_json(request, PasswordConfirm)
    if (problem_text := validate_confirm(confirm)) is not None:
        raise UnprocessableContent(detail=problem_text)
    await throttles_of(request).take_or_refuse(
        DELETE_ATTEMPTS, TOO_MANY_ATTEMPTS, "delete-account", str(user_id)
    )
    row = await pool.fetchrow(SELECT_PASSWORD, user_id)
    if row is None:
        raise NotAuthorizedException(detail="log in first")
    try:
        valid = await verify_async(confirm.password, row["password_hash"])
    except HashingBusy:
        raise HTTPException(status_code=503, detail=BUSY, headers={"Retry-After": BUSY_RETRY_AFTER}) from None
    if not valid:
        log.info("account deletion refused: wrong password", user_id=user_id)
        raise PermissionDeniedException(detail=WRONG_PASSWORD)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(DELETE_OUTBOX, row["email"])
        await conn.execute(DELETE_USER, user_id)
    await end_all_sessions(redis, settings, user_id)
    await revoke(nc, topology, "user", str(user_id))
    log.info("account deleted", user_id=user_id)
    response: Response[None] = Response(None, status_code=204)
    clear_cookie(response)
    return response
