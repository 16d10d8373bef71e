"""The admin's API: totals, the most watched sections, students (search, disable, enable) and the system's
health as `pmc status` tells it. Every route answers 403 unless the logged-in account is an admin (made
only by `pmc admin promote`, never through the API).

Read-only apart from disable/enable; alert counts come from the `user_notification` view, not from the
notifier's table.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
import structlog
from litestar import Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import PathParameter, QueryParameter
from nats.aio.client import Client
from nats.errors import Error as NatsError
from redis.asyncio import Redis

from pmc import status
from services.gateway.account_api import NOT_LOGGED_IN, problem
from services.gateway.admins import is_admin
from services.gateway.bodies import BODY_TOO_LARGE, EMPTY_BODY, NOT_JSON_TYPE, UnprocessableContent, answers
from services.gateway.live import revoke
from services.gateway.sessions import end_all_sessions
from shared.asu import term_label
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()

ADMINS_ONLY = problem("The logged-in account is not an admin")
MOST_WATCHED = 10
MAX_PAGE = 100
MAX_OFFSET = 1_000_000
MAX_QUERY = 254
# Long enough for every probe of `pmc status` (3 s each, in parallel) and slow JetStream answers.
HEALTH_TIMEOUT_SECONDS = 10.0
HEALTH_RETRY_AFTER = "10"


async def require_admin(user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]) -> int:
    """Dependency `admin_id`: the logged-in admin, 403 for anyone else (401 when not logged in)."""
    if not await is_admin(pool, user_id):
        raise PermissionDeniedException(detail="only admins may do this")
    return user_id


# --- summary --------------------------------------------------------------------------------------------

# "Today" is ASU's day (Arizona time), whatever the database's clock zone.
SELECT_TOTALS = """
WITH today AS (
    SELECT date_trunc('day', now() AT TIME ZONE 'America/Phoenix') AT TIME ZONE 'America/Phoenix' AS start
)
SELECT (SELECT count(*) FROM app_user) AS students,
       (SELECT count(*) FROM app_user WHERE email_verified) AS verified_students,
       (SELECT count(*) FROM watch) AS watches,
       (SELECT count(*) FROM (SELECT DISTINCT term, class_nbr FROM watch) AS d) AS sections_watched,
       (SELECT count(*) FROM user_notification, today WHERE sent_at >= today.start) AS emails_today,
       (SELECT count(*) FROM user_notification, today
        WHERE status IN ('bounced', 'refused') AND COALESCE(bounced_at, claimed_at) >= today.start)
           AS emails_failed_today
"""
SELECT_MOST_WATCHED = """
SELECT w.term, w.class_nbr, w.watchers, s.subject, s.catalog_nbr, s.title
FROM (
    SELECT term, class_nbr, count(*) AS watchers FROM watch
    GROUP BY term, class_nbr
    ORDER BY watchers DESC, term, class_nbr
    LIMIT $1
) AS w
LEFT JOIN section AS s ON s.term = w.term AND s.class_nbr = w.class_nbr
ORDER BY w.watchers DESC, w.term, w.class_nbr
"""


class WatchedSection(msgspec.Struct, frozen=True, kw_only=True):
    term: str
    term_label: str
    class_nbr: str
    # From the section's latest stored state; null when it was never found.
    course: str | None
    title: str | None
    watchers: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    students: int
    verified_students: int
    watches: int
    sections_watched: int
    emails_today: int
    emails_failed_today: int
    most_watched: list[WatchedSection]


def watched_section(row: asyncpg.Record) -> WatchedSection:
    known = row["subject"] is not None
    return WatchedSection(
        term=row["term"],
        term_label=term_label(row["term"]),
        class_nbr=row["class_nbr"],
        course=f"{row['subject']} {row['catalog_nbr']}" if known else None,
        title=row["title"] if known else None,
        watchers=row["watchers"],
    )


@get("/summary", responses={401: NOT_LOGGED_IN, 403: ADMINS_ONLY})
async def summary(admin_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]) -> Summary:
    """Totals: 200 `{"students", "verified_students", "watches", "sections_watched", "emails_today",
    "emails_failed_today", "most_watched": [{"term", "term_label", "class_nbr", "course", "title",
    "watchers"}]}` (the 10 sections with the most watchers). Emails are alert emails: sent today (Arizona
    time), and of those claimed or bounced today the ones that bounced, were marked as spam or were refused
    by the provider. 403 unless an admin is logged in."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        totals = await conn.fetchrow(SELECT_TOTALS)
        top = await conn.fetch(SELECT_MOST_WATCHED, MOST_WATCHED)
    assert totals is not None
    return Summary(**dict(totals), most_watched=[watched_section(row) for row in top])


# --- students -------------------------------------------------------------------------------------------

_STUDENT_COLUMNS = """
u.id, u.email, u.created_at, u.email_verified, u.disabled_at IS NOT NULL AS disabled, u.is_admin,
(SELECT count(*) FROM watch AS w WHERE w.user_id = u.id) AS watches
"""
# strpos, not LIKE: a search for "%" or "_" finds those characters, not everyone.
SELECT_STUDENTS = f"""
SELECT {_STUDENT_COLUMNS}, count(*) OVER () AS total
FROM app_user AS u
WHERE strpos(lower(u.email), lower($1)) > 0
ORDER BY u.created_at DESC, u.id DESC
LIMIT $2 OFFSET $3
"""
COUNT_STUDENTS = "SELECT count(*) FROM app_user WHERE strpos(lower(email), lower($1)) > 0"
SELECT_STUDENT = f"SELECT {_STUDENT_COLUMNS} FROM app_user AS u WHERE u.id = $1"
# Disabling again keeps the first time.
DISABLE = "UPDATE app_user SET disabled_at = COALESCE(disabled_at, now()) WHERE id = $1 RETURNING id"
ENABLE = "UPDATE app_user SET disabled_at = NULL WHERE id = $1 RETURNING id"


class StudentOut(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    email: str
    created_at: datetime
    verified: bool
    disabled: bool
    watches: int
    is_admin: bool


class Students(msgspec.Struct, frozen=True, kw_only=True):
    students: list[StudentOut]
    # Every student the search matches, of which this page shows `limit` from `offset`.
    total: int


def student_out(row: asyncpg.Record) -> StudentOut:
    return StudentOut(
        id=row["id"],
        email=row["email"],
        created_at=row["created_at"],
        verified=row["email_verified"],
        disabled=row["disabled"],
        watches=row["watches"],
        is_admin=row["is_admin"],
    )


def validate_query(q: str) -> str | None:
    """The message for a search text PostgreSQL could not take, or None."""
    if "\x00" in q:
        return "q must not contain a NUL character"
    return None


@get(
    "/students",
    responses={
        400: problem("limit, offset or q out of range"),
        401: NOT_LOGGED_IN,
        403: ADMINS_ONLY,
        422: problem("q holds a character no address has"),
    },
)
async def list_students(
    admin_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    q: Annotated[str, QueryParameter(max_length=MAX_QUERY, description="part of the email")] = "",
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> Students:
    """Students whose email contains `q` (any case), newest first: 200 `{"students": [{"id", "email",
    "created_at", "verified", "disabled", "watches", "is_admin"}], "total"}`, `limit` (1 to 100, default 50)
    from `offset`. 403 unless an admin is logged in."""
    if (problem_text := validate_query(q)) is not None:
        raise UnprocessableContent(detail=problem_text)
    rows = await pool.fetch(SELECT_STUDENTS, q, limit, offset)
    # Past the last page the window count is not there to read.
    total = rows[0]["total"] if rows else await pool.fetchval(COUNT_STUDENTS, q)
    return Students(students=[student_out(row) for row in rows], total=total)


# A student id as PostgreSQL stores it (bigint): a larger number is refused with 400, not sent to the query.
StudentId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
# What disabling or enabling a student can answer besides 200.
_STUDENT_ANSWERS = {
    400: "The id is not a positive 64-bit number.",
    401: "Not logged in.",
    403: "The logged-in account is not an admin.",
    404: "No student has this id.",
    413: BODY_TOO_LARGE,
    415: NOT_JSON_TYPE,
}


@dataclasses.dataclass(frozen=True)
class Sessions:
    """What ending a student's sessions and live streams takes."""

    redis: Redis
    settings: Settings
    nc: Client
    topology: Topology


async def _set_disabled(
    pool: asyncpg.Pool, sessions: Sessions, admin_id: int, student_id: int, disabled: bool
) -> StudentOut:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(DISABLE if disabled else ENABLE, student_id) is None:
            raise NotFoundException(detail="no such student")
        row = await conn.fetchrow(SELECT_STUDENT, student_id)
    assert row is not None
    if disabled:
        # Logged out everywhere now, live pages too; logging in again is refused while disabled.
        await end_all_sessions(sessions.redis, sessions.settings, student_id)
        await revoke(sessions.nc, sessions.topology, "user", str(student_id))
    log.info("student disabled" if disabled else "student enabled", admin_id=admin_id, user_id=student_id)
    return student_out(row)


@post(
    "/students/{student_id:int}/disable",
    status_code=200,
    operation_class=EMPTY_BODY,
    responses=answers({**_STUDENT_ANSWERS, 409: "Admins cannot disable themselves."}),
)
async def disable_student(
    student_id: StudentId,
    admin_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
) -> StudentOut:
    """Disable a student: they are logged out everywhere, cannot log in, and get no more email (their
    watches and history stay). 200 with the student (shape of one in `GET /api/v1/admin/students`); 409 for
    the admin's own account; 404 for no such student; 403 unless an admin is logged in."""
    if student_id == admin_id:
        raise HTTPException(status_code=409, detail="you cannot disable your own account")
    sessions = Sessions(redis, settings, nc, topology)
    return await _set_disabled(pool, sessions, admin_id, student_id, disabled=True)


@post(
    "/students/{student_id:int}/enable",
    status_code=200,
    operation_class=EMPTY_BODY,
    responses=answers(_STUDENT_ANSWERS),
)
async def enable_student(
    student_id: StudentId,
    admin_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
) -> StudentOut:
    """Enable a disabled student again: 200 with the student; 404 for no such student; 403 unless an admin
    is logged in."""
    sessions = Sessions(redis, settings, nc, topology)
    return await _set_disabled(pool, sessions, admin_id, student_id, disabled=False)


# --- health ---------------------------------------------------------------------------------------------


@get(
    "/health",
    responses={
        401: NOT_LOGGED_IN,
        403: ADMINS_ONLY,
        503: problem("NATS or PostgreSQL did not answer: the facts could not be gathered"),
    },
)
async def health(
    admin_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    settings: NamedDependency[Settings],
) -> dict[str, Any]:
    """The facts of `pmc status --json`: 200 `{"healthy", "problems": [...], "streams", "consumers",
    "dead_letters", "checked", "unchecked", "oldest_seconds", "median_seconds", "last_cycle", "services"}`
    (`services`: each of HEALTH_URLS, "ready" or why not). 200 also when unhealthy: `healthy` says it. 503
    with `Retry-After` when NATS or PostgreSQL does not answer within 10 s; 403 unless an admin is logged in.
    """
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            report = await status.collect(settings, nc, pool)
    except (TimeoutError, NatsError, OSError, asyncpg.PostgresError) as exc:
        log.warning("admin health facts unavailable", error=type(exc).__name__)
        raise HTTPException(
            status_code=503,
            detail=f"the health facts could not be gathered ({type(exc).__name__}): try again",
            headers={"Retry-After": HEALTH_RETRY_AFTER},
        ) from None
    return {**dataclasses.asdict(report), "healthy": report.healthy}


router = Router(
    path="/api/v1/admin",
    route_handlers=[summary, list_students, disable_student, enable_student, health],
    dependencies={"admin_id": Provide(require_admin)},
    tags=["admin"],
)
