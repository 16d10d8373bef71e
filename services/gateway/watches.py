"""A student's watches: list, add (one or several at once), choose their alerts, delete.

A new watch costs the class search nothing extra: a section already stored is covered by its course's
check at the next window, and a section never seen is asked for under the very message id the scheduler
gives its check of that window (`Topology.check_msg_id`), so adding, deleting and adding it again, or the
scheduler asking too, is one check per window, spent within the scraper's budget like any other.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import structlog
from litestar import Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import PathParameter
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.gateway.bodies import UnprocessableContent, answers, json_body, read_json
from services.gateway.sections import (
    CLASS_NBR_SCHEMA,
    TERM_SCHEMA,
    Lookup,
    SectionView,
    watch_view,
)
from services.gateway.terms import arizona_today, term_problem
from shared.alerts import ALERT_KINDS, DEFAULT_ALERTS
from shared.asu import is_class_nbr, is_term, term_label
from shared.events import CheckSection, WatchesChanged, encode
from shared.messaging import Outgoing, publish_all
from shared.streams import Topology

log = structlog.get_logger()

MAX_WATCHES = 25
PUBLISH_TIMEOUT = 2.0
# Class numbers or links in one paste, and the characters of the paste.
MAX_BULK_ITEMS = 25
MAX_BULK_TEXT = 8000
# What a request body may hold: a paste of 25 links fits easily.
MAX_BODY = 16 * 1024

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
# A new watch starts from the alert choices the student made for new watches (Settings) over the global
# defaults ($4, shared.alerts.DEFAULT_ALERTS); kinds the student never chose keep the defaults.
INSERT_WATCH = """
INSERT INTO watch (user_id, term, class_nbr, alerts)
SELECT u.id, $2, $3, $4::jsonb || COALESCE(u.default_alerts, '{}')
FROM app_user AS u WHERE u.id = $1
ON CONFLICT (user_id, term, class_nbr) DO NOTHING
RETURNING id
"""
SELECT_WATCHES_BY_ID = f"""
SELECT {_WATCH_COLUMNS}
FROM {_WATCH_SOURCES}
WHERE w.user_id = $1 AND w.id = ANY($2::bigint[])
"""
WATCHED_OF = "SELECT class_nbr FROM watch WHERE user_id = $1 AND term = $2 AND class_nbr = ANY($3::text[])"
INSERT_WATCHES = """
INSERT INTO watch (user_id, term, class_nbr, alerts)
SELECT u.id, $2, c.class_nbr, $4::jsonb || COALESCE(u.default_alerts, '{}')
FROM app_user AS u, unnest($3::text[]) AS c (class_nbr)
WHERE u.id = $1
ON CONFLICT (user_id, term, class_nbr) DO NOTHING
RETURNING id
"""
DEFAULTS_JSON = msgspec.json.encode(DEFAULT_ALERTS).decode()
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


def validate_term(term: str) -> str | None:
    """The message when a term is missing or malformed, or None (`terms.term_problem` says whether a
    well-formed one is offered now)."""
    if not term:
        return "term is required"
    if not is_term(term):
        return "term must be an ASU term code like 2267 (Fall 2026)"
    return None


def validate_watch(watch: NewWatch) -> str | None:
    """The message for the first problem with a new watch, or None."""
    term, class_nbr = watch.term.strip(), watch.class_nbr.strip()
    if (problem := validate_term(term)) is not None:
        return problem
    if not class_nbr:
        return "class number is required"
    if not is_class_nbr(class_nbr):
        return "class number must be 5 digits"
    return None


class BulkWatches(msgspec.Struct, kw_only=True):
    term: str = ""
    text: str = ""


class BulkError(msgspec.Struct, frozen=True, kw_only=True):
    input: str
    message: str


class BulkResult(msgspec.Struct, frozen=True, kw_only=True):
    added: list[WatchOut]
    already: list[str]
    errors: list[BulkError]


class Pasted(msgspec.Struct, frozen=True, kw_only=True):
    class_nbrs: list[str]
    errors: list[BulkError]

    @property
    def items(self) -> int:
        return len(self.class_nbrs) + len(self.errors)


CATALOG_HOST = "catalog.apps.asu.edu"
_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
# ASCII digits only: other scripts' digits are no class numbers, and count as separators.
_DIGITS = re.compile(r"[0-9]+")
_SHOWN = 120  # characters of an input quoted back in an error


def _from_link(link: str, term: str) -> str | BulkError:
    """The class number a catalog link searches for, or why it is not one."""
    problem = BulkError(input=link[:_SHOWN], message="not a link to one class in the ASU class search")
    try:
        parts = urlsplit(link)
        query = parse_qs(parts.query)
        host = parts.hostname
    except ValueError:
        return problem
    if host != CATALOG_HOST or not parts.path.startswith("/catalog/classes"):
        return problem
    keywords = [k.strip() for k in query.get("keywords", []) if k.strip()]
    if len(keywords) != 1 or not is_class_nbr(keywords[0]):
        return BulkError(input=link[:_SHOWN], message="this link does not search for one class number")
    linked = {t.strip() for t in query.get("term", []) if t.strip()}
    if linked and linked != {term}:
        other = sorted(linked - {term})[0]
        return BulkError(
            input=link[:_SHOWN],
            message=f"this link is for {term_label(other)[:20]}, not {term_label(term)}",
        )
    return keywords[0]


def parse_pasted(text: str, term: str) -> Pasted:
    """The class numbers in what a student pasted, in order, once each: 5-digit numbers separated by
    anything, and class search links (`...classlist?keywords=12345&term=2271`: the term, when there, must
    be `term`). Other runs of digits and other links are errors, quoted back."""
    found: list[tuple[int, str | BulkError]] = []
    for match in _URL.finditer(text):
        # Punctuation that closes a sentence or a parenthesis is not part of a pasted link.
        found.append((match.start(), _from_link(match.group(0).rstrip(".,;:)]}!?"), term)))
    # The digits of links are theirs: blanked out (same length, so positions keep the paste's order).
    rest = _URL.sub(lambda match: " " * len(match.group(0)), text)
    for match in _DIGITS.finditer(rest):
        digits = match.group(0)
        item = (
            digits
            if len(digits) == 5
            else BulkError(input=digits[:_SHOWN], message="class number must be 5 digits")
        )
        found.append((match.start(), item))
    class_nbrs: list[str] = []
    errors: list[BulkError] = []
    for _, item in sorted(found, key=lambda pair: pair[0]):
        if isinstance(item, BulkError):
            errors.append(item)
        elif item not in class_nbrs:
            class_nbrs.append(item)
    return Pasted(class_nbrs=class_nbrs, errors=errors)


async def announce_watches_changed(nc: Client, topology: Topology, user_id: int) -> None:
    """Tell every gateway's open live streams of this user to reload; best effort."""
    try:
        await nc.publish(topology.live_user_subject(user_id), encode(WatchesChanged(user_id=user_id)))
    except Exception as exc:
        log.warning("watches-changed publish failed", user_id=user_id, error=str(exc))


async def request_checks(js: JetStreamContext, topology: Topology, added: list[WatchOut]) -> None:
    """Have the sections of new watches that were never stored looked up in this window; best effort.

    The message id is the scheduler's for (section, window): JetStream keeps one per window, however often
    the section is added, deleted and added again, and whether the scheduler asks too. A section already
    stored needs nothing: its course is checked every window.
    """
    now = time.time()
    window = topology.window_of(now)
    messages = [
        Outgoing(
            topology.check_subject,
            encode(CheckSection(term=w.term, class_nbr=w.class_nbr, window=window, requested_at=now)),
            topology.check_msg_id(w.term, w.class_nbr, window),
        )
        for w in added
        if w.section is None
    ]
    if not messages:
        return
    try:
        acks = await publish_all(js, messages, ack_timeout=PUBLISH_TIMEOUT)
    except Exception as exc:
        # The scheduler checks every watched section at its next window anyway.
        log.warning("check publish failed", sections=len(messages), error=str(exc) or type(exc).__name__)
        return
    log.info(
        "checks requested for new watches",
        window=window,
        published=sum(1 for ack in acks if not ack.duplicate),
        duplicates=sum(1 for ack in acks if ack.duplicate),
    )


@get("/api/v1/watches", responses=answers({401: "Not logged in."}))
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


_NEW_WATCH_BODY = json_body(
    {"term": TERM_SCHEMA, "class_nbr": CLASS_NBR_SCHEMA},
    ["term", "class_nbr"],
    "The term (one of `GET /api/v1/terms`) and the 5-digit class number.",
)


@post(
    "/api/v1/watches",
    status_code=201,
    request_max_body_size=MAX_BODY,
    operation_class=_NEW_WATCH_BODY,
    responses=answers(
        {
            400: "The body is not JSON.",
            401: "Not logged in.",
            409: "Already watching this section.",
            413: "The body is larger than 16 KB.",
            415: "The body is not sent as application/json.",
            422: "A malformed class number; a malformed, ended or not yet open term; or 25 watches.",
        }
    ),
)
async def add_watch(
    request: Request[Any, Any, Any],
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> WatchOut:
    """Watch a section: body `{"term": "2271", "class_nbr": "66445"}`.

    201 with the watch (shape of `GET /api/v1/watches`); a section never seen before is looked up within
    the current check window. 409 when already watching it; 422 for a malformed class number, a term not
    offered by `GET /api/v1/terms` (ended, or not open yet: the message names the terms that are), or at
    25 watches; 401 when not logged in.
    """
    new = await read_json(request, NewWatch)
    if (problem := validate_watch(new)) is not None:
        raise UnprocessableContent(detail=problem)
    term, class_nbr = new.term.strip(), new.class_nbr.strip()
    if (problem := term_problem(term, arizona_today())) is not None:
        raise UnprocessableContent(detail=problem)
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(LOCK_USER, user_id) is None:
            raise NotAuthorizedException(detail="log in first")
        if await conn.fetchval(COUNT_WATCHES, user_id) >= MAX_WATCHES:
            raise UnprocessableContent(detail=f"watch limit reached ({MAX_WATCHES})")
        watch_id = await conn.fetchval(INSERT_WATCH, user_id, term, class_nbr, DEFAULTS_JSON)
        if watch_id is None:
            raise HTTPException(status_code=409, detail=f"you already watch class {class_nbr} in this term")
        row = await conn.fetchrow(SELECT_WATCH, user_id, watch_id)
    assert row is not None
    log.info("watch added", user_id=user_id, watch_id=watch_id, term=term, class_nbr=class_nbr)
    watch = watch_out(row)
    await request_checks(js, topology, [watch])
    await announce_watches_changed(nc, topology, user_id)
    return watch


_BULK_BODY = json_body(
    {
        "term": TERM_SCHEMA,
        "text": Schema(
            type=OpenAPIType.STRING,
            max_length=MAX_BULK_TEXT,
            examples=["12345, 23456 https://catalog.apps.asu.edu/catalog/classes/classlist?keywords=34567"],
        ),
    },
    ["term", "text"],
    "The term, and what the student pasted: 5-digit class numbers separated by anything, and/or class"
    " search links (`https://catalog.apps.asu.edu/catalog/classes/classlist?keywords=12345&term=2271`).",
)


@post(
    "/api/v1/watches/bulk",
    status_code=200,
    request_max_body_size=MAX_BODY,
    operation_class=_BULK_BODY,
    responses=answers(
        {
            400: "The body is not JSON.",
            401: "Not logged in.",
            413: "The body is larger than 16 KB.",
            415: "The body is not sent as application/json.",
            422: "A malformed, ended or not yet open term; nothing to add; more than 25 items; a text"
            " over 8,000 characters.",
        }
    ),
)
async def add_watches(
    request: Request[Any, Any, Any],
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    nc: NamedDependency[Client],
    js: NamedDependency[JetStreamContext],
    topology: NamedDependency[Topology],
) -> BulkResult:
    """Watch several sections of one term at once: body `{"term": "2271", "text": "<what was pasted>"}`,
    the text holding up to 25 class numbers (5 digits, separated by anything) and/or class search links
    (their `term`, when given, must be this term).

    200 `{"added": [watch], "already": ["12345"], "errors": [{"input", "message"}]}`: the watches made
    (shape of `GET /api/v1/watches`), the class numbers already watched, and what could not be added (not
    a class number or class search link, a link for another term, over the 25-watch limit). 422 for a term
    not offered by `GET /api/v1/terms`, a text with nothing to add or over 25 items; 401 when not logged in.
    """
    bulk = await read_json(request, BulkWatches)
    term = bulk.term.strip()
    if (problem := validate_term(term) or term_problem(term, arizona_today())) is not None:
        raise UnprocessableContent(detail=problem)
    if len(bulk.text) > MAX_BULK_TEXT:
        raise UnprocessableContent(detail=f"paste at most {MAX_BULK_TEXT} characters at once")
    pasted = parse_pasted(bulk.text, term)
    if pasted.items == 0:
        raise UnprocessableContent(detail="paste one or more 5-digit class numbers or class search links")
    if pasted.items > MAX_BULK_ITEMS:
        raise UnprocessableContent(
            detail=f"paste at most {MAX_BULK_ITEMS} class numbers or links at once ({pasted.items} found)"
        )
    errors = list(pasted.errors)
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(LOCK_USER, user_id) is None:
            raise NotAuthorizedException(detail="log in first")
        room = max(0, MAX_WATCHES - await conn.fetchval(COUNT_WATCHES, user_id))
        watched = {row["class_nbr"] for row in await conn.fetch(WATCHED_OF, user_id, term, pasted.class_nbrs)}
        new = [c for c in pasted.class_nbrs if c not in watched]
        errors += [BulkError(input=c, message=f"watch limit reached ({MAX_WATCHES})") for c in new[room:]]
        new = new[:room]
        ids = (
            [row["id"] for row in await conn.fetch(INSERT_WATCHES, user_id, term, new, DEFAULTS_JSON)]
            if new
            else []
        )
        rows = await conn.fetch(SELECT_WATCHES_BY_ID, user_id, ids) if ids else []
    order = {class_nbr: n for n, class_nbr in enumerate(new)}
    added = sorted((watch_out(row) for row in rows), key=lambda w: order[w.class_nbr])
    already = [c for c in pasted.class_nbrs if c in watched]
    log.info(
        "watches added in bulk",
        user_id=user_id,
        term=term,
        added=len(added),
        already=len(already),
        errors=len(errors),
    )
    if added:
        await request_checks(js, topology, added)
        await announce_watches_changed(nc, topology, user_id)
    return BulkResult(added=added, already=already, errors=errors)


# A watch id as PostgreSQL stores it (bigint): a larger number is refused with 400, not sent to the query.
WatchId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]


_ALERTS_BODY = json_body(
    {
        "alerts": Schema(
            type=OpenAPIType.OBJECT,
            additional_properties=Schema(type=OpenAPIType.BOOLEAN),
            examples=[{"closed_again": True}],
        )
    },
    ["alerts"],
    f"Alert kinds to turn on or off: any of {', '.join(ALERT_KINDS)}.",
)


@patch(
    "/api/v1/watches/{watch_id:int}",
    request_max_body_size=MAX_BODY,
    operation_class=_ALERTS_BODY,
    responses=answers(
        {
            400: "The body is not JSON, or the watch id is out of range.",
            401: "Not logged in.",
            404: "No such watch, or it belongs to someone else.",
            413: "The body is larger than 16 KB.",
            415: "The body is not sent as application/json.",
            422: "An unknown alert kind, or a value that is not true or false.",
        }
    ),
)
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
    choices = await read_json(request, AlertChoices)
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


@delete(
    "/api/v1/watches/{watch_id:int}",
    status_code=204,
    responses=answers(
        {
            400: "The watch id is out of range.",
            401: "Not logged in.",
            404: "No such watch, or it belongs to someone else.",
        }
    ),
)
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
