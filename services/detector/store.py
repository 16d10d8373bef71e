"""Section state in PostgreSQL: one statement per batch upserts, keeps the seat history and returns
old-versus-new; another counts the misses, and the sections missing long enough are retired
(services/detector/retirement.py decides)."""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

import asyncpg
import msgspec
import structlog
from asyncpg.pool import PoolConnectionProxy

from services.detector.changes import Previous
from services.detector.retirement import Miss
from shared.events import SectionNotFound, SectionSnapshot, SectionState

log = structlog.get_logger()

_STATE_COLUMNS = (
    "subject, catalog_nbr, title, section, component, instructors, enrl_cap, enrl_tot, open_seats, "
    "wait_cap, wait_tot, reserved_seats, days, start_time, end_time, location, instruction_mode, class_status"
)
_COLUMNS = f"{_STATE_COLUMNS}, term_end"

# Seat history kept per section (migration 0010): the latest this many samples, none older than this.
HISTORY_SAMPLES = 200
HISTORY_DAYS = 180

# Later snapshots win (`scraped_at`); an older one arriving late changes nothing. The previous values are
# kept in prev_*; when the same snapshot is applied again (a redelivery), prev_* are left as they were,
# so the row reports the very same transition again and the emitted change ids repeat (deduplicated).
#
# The same statement keeps the seat history: a stored snapshot adds a sample (at = its scraped_at) when its
# seat counts differ from the section's latest sample, or there is none (a first sight, or a section stored
# before migration 0010), or that one is about to age out (a section whose seats never move keeps one
# recent point). A redelivery finds its own sample as the latest, with the same counts, and adds nothing;
# the primary key refuses a second sample at the same moment all the same. Each section stored here is
# then pruned to its latest HISTORY_SAMPLES and to HISTORY_DAYS before the snapshot (the data's clock,
# not the database's: a backlog replayed later prunes as it would have then). All sub-statements see the
# table as it was before the statement, so the new sample is not among those counted: a section that gets
# one keeps HISTORY_SAMPLES - 1 of the others. Sections not stored in a batch are not touched: none of
# them grows, and each is pruned at its next snapshot. One round trip per batch, whatever its size.
UPSERT_SNAPSHOTS = f"""
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
        term text, class_nbr text, subject text, catalog_nbr text, title text, section text,
        component text, instructors text[], enrl_cap integer, enrl_tot integer, open_seats integer,
        wait_cap integer, wait_tot integer, reserved_seats boolean, days text, start_time text,
        end_time text, location text, instruction_mode text, class_status text, term_end date,
        snapshot_id text, scraped_at double precision)
), found_again AS (
    DELETE FROM section_missing AS m USING incoming AS i
    WHERE m.term = i.term AND m.class_nbr = i.class_nbr AND m.last_missing_at <= to_timestamp(i.scraped_at)
), stored AS (
INSERT INTO section AS s (term, class_nbr, {_COLUMNS}, snapshot_id, scraped_at)
SELECT term, class_nbr, {_COLUMNS}, snapshot_id, to_timestamp(scraped_at) FROM incoming
ON CONFLICT (term, class_nbr) DO UPDATE SET
    subject = EXCLUDED.subject, catalog_nbr = EXCLUDED.catalog_nbr, title = EXCLUDED.title,
    section = EXCLUDED.section, component = EXCLUDED.component, instructors = EXCLUDED.instructors,
    enrl_cap = EXCLUDED.enrl_cap, enrl_tot = EXCLUDED.enrl_tot, open_seats = EXCLUDED.open_seats,
    wait_cap = EXCLUDED.wait_cap, wait_tot = EXCLUDED.wait_tot, reserved_seats = EXCLUDED.reserved_seats,
    days = EXCLUDED.days, start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
    location = EXCLUDED.location, instruction_mode = EXCLUDED.instruction_mode,
    class_status = EXCLUDED.class_status, term_end = EXCLUDED.term_end,
    prev_open_seats = CASE WHEN s.snapshot_id = EXCLUDED.snapshot_id THEN s.prev_open_seats
                           ELSE s.open_seats END,
    prev_instructors = CASE WHEN s.snapshot_id = EXCLUDED.snapshot_id THEN s.prev_instructors
                            ELSE s.instructors END,
    prev_class_status = CASE WHEN s.snapshot_id = EXCLUDED.snapshot_id THEN s.prev_class_status
                             ELSE s.class_status END,
    prev_wait_cap = CASE WHEN s.snapshot_id = EXCLUDED.snapshot_id THEN s.prev_wait_cap
                         ELSE s.wait_cap END,
    prev_wait_tot = CASE WHEN s.snapshot_id = EXCLUDED.snapshot_id THEN s.prev_wait_tot
                         ELSE s.wait_tot END,
    snapshot_id = EXCLUDED.snapshot_id,
    scraped_at = EXCLUDED.scraped_at
WHERE EXCLUDED.scraped_at >= s.scraped_at
RETURNING term, class_nbr, snapshot_id, prev_open_seats, prev_instructors, prev_class_status, class_status,
    prev_wait_cap, wait_cap, prev_wait_tot, wait_tot, open_seats, enrl_cap, enrl_tot, scraped_at
), sampled AS (
    SELECT st.term, st.class_nbr, st.scraped_at AS at, st.open_seats, st.enrl_cap, st.enrl_tot,
        latest.at IS NULL
        OR latest.at < st.scraped_at - interval '{HISTORY_DAYS} days'
        OR (latest.open_seats, latest.enrl_cap, latest.enrl_tot)
            IS DISTINCT FROM (st.open_seats, st.enrl_cap, st.enrl_tot) AS new_sample
    FROM stored AS st
    LEFT JOIN LATERAL (
        SELECT p.at, p.open_seats, p.enrl_cap, p.enrl_tot FROM section_sample AS p
        WHERE p.term = st.term AND p.class_nbr = st.class_nbr
        ORDER BY p.at DESC LIMIT 1
    ) AS latest ON true
), recorded AS (
    INSERT INTO section_sample (term, class_nbr, at, open_seats, enrl_cap, enrl_tot)
    SELECT term, class_nbr, at, open_seats, enrl_cap, enrl_tot FROM sampled WHERE new_sample
    ON CONFLICT (term, class_nbr, at) DO NOTHING
), pruned AS (
    DELETE FROM section_sample AS d USING sampled AS n
    WHERE d.term = n.term AND d.class_nbr = n.class_nbr
      AND (d.at < n.at - interval '{HISTORY_DAYS} days'
           OR (n.new_sample AND d.at <= (
               SELECT p.at FROM section_sample AS p
               WHERE p.term = n.term AND p.class_nbr = n.class_nbr
               ORDER BY p.at DESC OFFSET {HISTORY_SAMPLES - 1} LIMIT 1)))
)
SELECT term, class_nbr, snapshot_id, prev_open_seats, prev_instructors,
    -- NULL where the replaced snapshot was stored before migration 0004, or by a detector of the release
    -- before (a rolling deploy): the current values invent no cancellation or waitlist opening, and leave
    -- the seat rules as they were.
    COALESCE(prev_class_status, class_status) AS prev_class_status,
    COALESCE(prev_wait_cap, wait_cap) AS prev_wait_cap,
    COALESCE(prev_wait_tot, wait_tot) AS prev_wait_tot
FROM stored
"""

# A miss older than the last sighting is stale and ignored; one miss per section per batch (the newest).
# A retired section's row stays retired through later misses: only a sighting (found_again) clears it.
RECORD_MISSING = """
INSERT INTO section_missing AS m
    (term, class_nbr, snapshot_id, missing_count, first_missing_at, last_missing_at)
SELECT DISTINCT ON (t.term, t.class_nbr)
    t.term, t.class_nbr, t.snapshot_id, 1, to_timestamp(t.scraped_at), to_timestamp(t.scraped_at)
FROM jsonb_to_recordset($1::jsonb)
    AS t(term text, class_nbr text, snapshot_id text, scraped_at double precision)
WHERE NOT EXISTS (
    SELECT 1 FROM section s
    WHERE s.term = t.term AND s.class_nbr = t.class_nbr AND s.scraped_at > to_timestamp(t.scraped_at)
)
ORDER BY t.term, t.class_nbr, t.scraped_at DESC
ON CONFLICT (term, class_nbr) DO UPDATE SET
    missing_count = m.missing_count + CASE WHEN m.snapshot_id = EXCLUDED.snapshot_id THEN 0 ELSE 1 END,
    snapshot_id = EXCLUDED.snapshot_id,
    last_missing_at = EXCLUDED.last_missing_at
WHERE EXCLUDED.last_missing_at >= m.last_missing_at
RETURNING term, class_nbr, snapshot_id, extract(epoch FROM last_missing_at)::float8 AS scraped_at,
    missing_count, gone_snapshot_id
"""

# How many sections were missing, and how many were checked, since a moment (one check interval back).
COUNT_RECENT = """
SELECT (SELECT count(*) FROM section_missing WHERE last_missing_at > to_timestamp($1)) AS missing,
       (SELECT count(*) FROM watched_section_freshness WHERE checked_at > to_timestamp($1)) AS checked
"""

# Once per section (gone_at IS NULL): the miss just recorded retires it, and its id names the change.
RETIRE = """
UPDATE section_missing AS m SET gone_at = now(), gone_snapshot_id = m.snapshot_id
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(term, class_nbr, snapshot_id)
WHERE m.term = t.term AND m.class_nbr = t.class_nbr AND m.snapshot_id = t.snapshot_id AND m.gone_at IS NULL
RETURNING m.term, m.class_nbr
"""

LAST_SEEN = f"""
SELECT s.term, s.class_nbr, {_STATE_COLUMNS}, COALESCE(to_char(term_end, 'YYYY-MM-DD'), '') AS term_end
FROM section AS s
JOIN unnest($1::text[], $2::text[]) AS k(term, class_nbr) ON s.term = k.term AND s.class_nbr = k.class_nbr
"""


# A pool, a connection, or a pooled connection inside a transaction: the queries need only `fetch`/`fetchrow`.
Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


class Applied(NamedTuple):
    snapshot: SectionSnapshot
    previous: Previous | None


def term_end_date(value: str) -> str | None:
    """The term's last day as PostgreSQL reads a date; None when not given or not a date. A section is
    worth storing without it, where one unreadable value failing the batch would hold up every snapshot
    in it."""
    if not value:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        log.warning("term end unreadable", term_end=value[:40])
        return None


def _row(snapshot: SectionSnapshot) -> dict[str, object]:
    row = msgspec.structs.asdict(snapshot.state)
    row["instructors"] = list(snapshot.state.instructors)
    row["term_end"] = term_end_date(snapshot.state.term_end)
    row["snapshot_id"] = snapshot.snapshot_id
    row["scraped_at"] = snapshot.scraped_at
    return row


async def apply_snapshots(conn: Executor, snapshots: list[SectionSnapshot]) -> list[Applied]:
    """Store the snapshots; return the ones not stale, each with what it replaced (None: first sight)."""
    if not snapshots:
        return []
    by_key = {(s.state.term, s.state.class_nbr): s for s in snapshots}
    rows = await conn.fetch(UPSERT_SNAPSHOTS, msgspec.json.encode([_row(s) for s in snapshots]).decode())
    applied: list[Applied] = []
    for row in rows:
        snapshot = by_key[(row["term"], row["class_nbr"])]
        previous = (
            None
            if row["prev_open_seats"] is None
            else Previous(
                row["prev_open_seats"],
                tuple(row["prev_instructors"] or ()),
                row["prev_class_status"],
                row["prev_wait_cap"],
                row["prev_wait_tot"],
            )
        )
        applied.append(Applied(snapshot, previous))
    return applied


async def record_missing(conn: Executor, missing: list[SectionNotFound]) -> list[Miss]:
    """Count the misses; return each section's miss as stored (none for a stale miss)."""
    if not missing:
        return []
    payload = [
        {"term": m.term, "class_nbr": m.class_nbr, "snapshot_id": m.snapshot_id, "scraped_at": m.scraped_at}
        for m in missing
    ]
    rows = await conn.fetch(RECORD_MISSING, msgspec.json.encode(payload).decode())
    return [
        Miss(
            term=row["term"],
            class_nbr=row["class_nbr"],
            snapshot_id=row["snapshot_id"],
            scraped_at=row["scraped_at"],
            missing_count=row["missing_count"],
            gone_snapshot_id=row["gone_snapshot_id"],
        )
        for row in rows
    ]


class Recent(NamedTuple):
    """Sections missing, and sections checked (found or missing), in one check interval."""

    missing: int
    checked: int


async def count_recent(conn: Executor, since: float) -> Recent:
    row = await conn.fetchrow(COUNT_RECENT, since)
    assert row is not None  # one row of two counts, always
    return Recent(row["missing"], row["checked"])


async def retire(conn: Executor, misses: list[Miss]) -> list[Miss]:
    """Mark the sections gone by these misses; return those retired now (not before)."""
    if not misses:
        return []
    rows = await conn.fetch(
        RETIRE,
        [m.term for m in misses],
        [m.class_nbr for m in misses],
        [m.snapshot_id for m in misses],
    )
    retired = {(row["term"], row["class_nbr"]) for row in rows}
    return [m for m in misses if (m.term, m.class_nbr) in retired]


async def last_seen(conn: Executor, keys: list[tuple[str, str]]) -> dict[tuple[str, str], SectionState]:
    """The stored state of each of these sections that was ever found, by (term, class number)."""
    if not keys:
        return {}
    rows = await conn.fetch(LAST_SEEN, [term for term, _ in keys], [class_nbr for _, class_nbr in keys])
    return {(row["term"], row["class_nbr"]): msgspec.convert(dict(row), SectionState) for row in rows}
