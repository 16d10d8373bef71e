"""A student's watches: list, add (and ask for an immediate look-up), choose their alerts, delete."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
import structlog
from litestar import Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException
from litestar.params import PathParameter
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.gateway.bodies import UnprocessableContent, read_json
from services.gateway.sections import Lookup, SectionView, watch_view
from shared.alerts import ALERT_KINDS, DEFAULT_ALERTS
from shared.asu import is_class_nbr, is_term
from shared.events import CheckSection, WatchesChanged, encode
from shared.streams import Topology

log = structlog.get_logger()

MAX_WATCHES = 25
PUBLISH_TIMEOUT = 2.0

_WATCH_COLUMNS = """
    w.id, w.term, w.class_nbr, w.created_at, w.alerts::text AS alerts,
    s.subject, s.catalog_nbr, s.title, s.section, s.component, s.instructors, s.enrl_cap, s.enrl_tot,
    s.open_seats, s.wait_cap, s.wait_tot, s.reserved_seats, s.days, s.start_time, s.end_time, s.location,
    s.instruction_mode, s.class_status, s.scraped_at, m.missing_count, m.last_missing_at, m.gone_at,
    COALESCE(t.ended, false) AS term_ended
"""
_WATCH_SOURCES = """
watch w
LEFT JOIN section s ON s.term = w.term AND s.class_nbr = w.class_nbr
LEFT JOIN section_missing m ON m.term = w.term AND m.class_nbr = w.class_nbr
LEFT JOIN term_calendar t ON t.term = w.term
"""
SELECT_WATCHES = f"""
SELECT {_WATCH_COLUMNS}
FROM {_WATCH_SOURCES}
WHERE w.user_id = $1
ORDER BY w.created_at, w.id
"""
SELECT_WATCH = f"""
SELECT {_WATCH_COLUMNS}
FROM {_WATCH_SOURCES}
WHERE w.user_id = $1 AND w.id = $2
"""
# Locking the user row serialises one user's concurrent adds, so the cap holds exactly.
LOCK_USER = "SELECT id FROM app_user WHERE id = $1 FOR UPDATE"
COUNT_WATCHES = "SELECT count(*) FROM watch WHERE user_id = $1"
INSERT_WATCH = """
INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, $2, $3)
ON CONFLICT (user_id, term, class_nbr) DO NOTHING
RETURNING id
"""
DELETE_WATCH = "DELETE FROM watch WHERE id = $1 AND user_id = $2"
# Merged into what is stored: kinds the request leaves out keep their choice.
SET_ALERTS = "UPDATE watch SET alerts = alerts || $3::jsonb WHERE id = $1 AND user_id = $2 RETURNING id"


# `sections.Lookup` (what the last look-up said), and the two reasons a section is no longer checked.
WatchStatus = Literal["checking", "found", "not_found", "gone", "ended"]


class WatchOut(msgspec.Struct, frozen=True, kw_only=True):
    """A watch as the API shows it (`sections.WatchView`, with the statuses of sections no longer checked)
    and the alerts chosen for it: every kind of `shared.alerts.ALERT_KINDS`, defaults filled."""

    id: int
    term: str
    term_label: str
    class_nbr: str
    created_at: datetime
    catalog_url: str
    status: WatchStatus
    section: SectionView | None
    alerts: dict[str, bool]


def watch_status(lookup: Lookup, *, gone: bool, term_ended: bool) -> WatchStatus:
    """A term that ended wins over everything (nothing in it is checked any more), then a retired section,
    then what the last look-up said."""
    if term_ended:
        return "ended"
    if gone:
        return "gone"
    return lookup


def alerts_of(stored: str | None) -> dict[str, bool]:
    """Every alert kind with its choice: the stored one, else the default (a kind added after the watch)."""
    chosen = msgspec.json.decode(stored, type=dict[str, bool]) if stored else {}
    return {kind: chosen.get(kind, DEFAULT_ALERTS[kind]) for kind in ALERT_KINDS}


def watch_out(row: asyncpg.Record) -> WatchOut:
    view = watch_view(row)
    status = watch_status(view.status, gone=row["gone_at"] is not None, term_ended=row["term_ended"])
    return WatchOut(**(msgspec.structs.asdict(view) | {"status": status}), alerts=alerts_of(row["alerts"]))


class AlertChoices(msgspec.Struct, kw_only=True):
    # Values must be JSON booleans: msgspec refuses 1, "true" and null with a message naming the key.
    alerts: dict[str, bool] | None = None


def validate_alerts(choices: AlertChoices) -> str | None:
    """The message for the first problem with a change of alerts, or None."""
    if choices.alerts is None:
        return f"send alerts: an object of true/false by kind ({', '.join(ALERT_KINDS)})"
    unknown = sorted(kind for kind in choices.alerts if kind not in ALERT_KINDS)
    if unknown:
        return f"unknown alert kind {unknown[0][:40]!r}: choose from {', '.join(ALERT_KINDS)}"
    return None


class NewWatch(msgspec.Struct, kw_only=True):
    term: str = ""
    class_nbr: str = ""


def validate_watch(watch: NewWatch) -> str | None:
    """The message for the first problem with a new watch, or None."""
    term, class_nbr = watch.term.strip(), watch.class_nbr.strip()
    if not term:
        return "term is required"
    if not is_term(term):
        return "term must be an ASU term code like 2267 (Fall 2026)"
    if not class_nbr:
        return "class number is required"
    if not is_class_nbr(class_nbr):
        return "class number must be 5 digits"
    return None


async def announce_watches_changed(nc: Client, topology: Topology, user_id: int) -> None:
    """Tell every gateway's open live streams of this user to reload; best effort."""
    try:
        await nc.publish(topology.live_user_subject(user_id), encode(WatchesChanged(user_id=user_id)))
    except Exception as exc:
        log.warning("watches-changed publish failed", user_id=user_id, error=str(exc))


async def request_check(
    js: JetStreamContext, topology: Topology, term: str, class_nbr: str, watch_id: int
) -> None:
    """Ask the scraper to look the section up now instead of at its next cycle; best effort."""
    now = time.time()
    check = CheckSection(term=term, class_nbr=class_nbr, window=topology.window_of(now), requested_at=now)
    try:
        await js.publish(
            topology.check_subject,
            encode(check),
            timeout=PUBLISH_TIMEOUT,
            headers={"Nats-Msg-Id": f"check:{term}:{class_nbr}:new:{watch_id}"},
        )
    except Exception as exc:
        log.warning("immediate check publish failed", term=term, class_nbr=class_nbr, error=str(exc))


@get("/api/v1/watches")
async def list_watches(user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]) -> list[WatchOut]:
    """The logged-in user's watches, oldest first: 200 `[watch]`, 401 when not logged in.

    A watch is `{"id", "term", "term_label", "class_nbr", "created_at", "catalog_url", "status",
    "section", "alerts"}`: `status` is `checking` before the first look-up, then `found` or `not_found` (the
    class search does not list it now); `gone` once it was not listed in 3 checks in a row (no longer
    checked, until it is seen again); `ended` once its term is over (no longer checked; this wins over every
    other status); `alerts` maps every alert kind (`seat_opened`,
    `instructor_changed`, `closed_again`, `waitlist_opened`) to whether the student wants it; `section` is
    null until the section was first found, else its latest state: `course`, `title`, `section`,
    `instructors`, `instructor_label`, `instructor_links` (Rate My Professors, named instructors only),
    seats (`enrl_cap`, `enrl_tot`, `open_seats`, `reserved_seats`, `wait_cap`, `wait_tot`), `days`,
    `start_time`, `end_time`, `location`, `last_checked`, `catalog_url`, and `found` (false when the last
    check did not find the section).
    """
    return [watch_out(row) for row in await pool.fetch(SELECT_WATCHES, user_id)]


@post("/api/v1/watches", status_code=201)
async def add_watch(
    request: Request[Any, Any, Any],
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> WatchOut:
    """Watch a section: body `{"term": "2267", "class_nbr": "66445"}`.

    201 with the watch (shape of `GET /api/v1/watches`), and the section is looked up right away;
    409 when already watching it; 422 for an invalid term or class number, or at 25 watches; 401 when
    not logged in.
    """
    new = await read_json(request, NewWatch)
    if (problem := validate_watch(new)) is not None:
        raise UnprocessableContent(detail=problem)
    term, class_nbr = new.term.strip(), new.class_nbr.strip()
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(LOCK_USER, user_id) is None:
            raise NotAuthorizedException(detail="log in first")
        if await conn.fetchval(COUNT_WATCHES, user_id) >= MAX_WATCHES:
            raise UnprocessableContent(detail=f"watch limit reached ({MAX_WATCHES})")
        watch_id = await conn.fetchval(INSERT_WATCH, user_id, term, class_nbr)
        if watch_id is None:
            raise HTTPException(status_code=409, detail=f"you already watch class {class_nbr} in this term")
        row = await conn.fetchrow(SELECT_WATCH, user_id, watch_id)
    assert row is not None
    log.info("watch added", user_id=user_id, watch_id=watch_id, term=term, class_nbr=class_nbr)
    await request_check(js, topology, term, class_nbr, watch_id)
    await announce_watches_changed(nc, topology, user_id)
    return watch_out(row)


# A watch id as PostgreSQL stores it (bigint): a larger number is refused with 400, not sent to the query.
WatchId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]


@patch("/api/v1/watches/{watch_id:int}", request_max_body_size=16 * 1024)
async def update_watch(
    request: Request[Any, Any, Any],
    watch_id: WatchId,
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
) -> WatchOut:
    """Choose which alerts a watch sends: body `{"alerts": {"closed_again": true, ...}}`, any subset of
    `seat_opened`, `instructor_changed`, `closed_again`, `waitlist_opened`; kinds left out keep their choice.

    200 with the watch (shape of `GET /api/v1/watches`); 422 for an unknown kind or a value that is not
    true/false; 404 when the watch does not exist or belongs to someone else; 401 when not logged in.
    """
    try:
        choices = await read_json(request, AlertChoices)
    except RecursionError:
        # read_json lets this through: JSON nested deeper than the decoder's recursion limit.
        raise HTTPException(status_code=400, detail="the request body is not valid JSON") from None
    if (problem := validate_alerts(choices)) is not None:
        raise UnprocessableContent(detail=problem)
    chosen = msgspec.json.encode(choices.alerts).decode()
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(SET_ALERTS, watch_id, user_id, chosen) is None:
            raise NotFoundException(detail="no such watch")
        row = await conn.fetchrow(SELECT_WATCH, user_id, watch_id)
    assert row is not None
    log.info("watch alerts changed", user_id=user_id, watch_id=watch_id, alerts=choices.alerts)
    await announce_watches_changed(nc, topology, user_id)
    return watch_out(row)


@delete("/api/v1/watches/{watch_id:int}", status_code=204)
async def delete_watch(
    watch_id: WatchId,
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
) -> None:
    """Stop watching: 204; 404 when the watch does not exist or belongs to someone else; 401 when not
    logged in."""
    if await pool.execute(DELETE_WATCH, watch_id, user_id) != "DELETE 1":
        raise NotFoundException(detail="no such watch")
    log.info("watch deleted", user_id=user_id, watch_id=watch_id)
    await announce_watches_changed(nc, topology, user_id)
