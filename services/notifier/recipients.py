"""Who is told about a change: watchers of the changed sections who can receive email and want it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

import asyncpg
import msgspec

from services.notifier.email import Recipient

# One query for every section of the batch. Only verified addresses get alerts; unsubscribed, bounced,
# complained or refused ones get nothing, nor do students an admin disabled.
ELIGIBLE_WATCHERS = """
SELECT w.id AS watch_id, w.user_id, u.email, w.term, w.class_nbr, w.alerts::text AS alerts
FROM unnest($1::text[], $2::text[]) AS c(term, class_nbr)
JOIN watch w ON w.term = c.term AND w.class_nbr = c.class_nbr
JOIN app_user u ON u.id = w.user_id
WHERE u.email_verified AND u.notifications_enabled AND u.email_status = 'ok' AND u.disabled_at IS NULL
ORDER BY w.id
"""

# "The seat you were told about is gone": a watch was emailed a seat_opened that no earlier closed_again
# (another change than this one) has answered yet.
TOLD_ABOUT_OPENING = """
SELECT c.watch_id, c.change_key
FROM unnest($1::bigint[], $2::text[]) AS c(watch_id, change_key)
WHERE EXISTS (
    SELECT 1 FROM notification AS o
    WHERE o.watch_id = c.watch_id AND o.kind = 'seat_opened' AND o.sent_at IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM notification AS f
          WHERE f.watch_id = c.watch_id AND f.kind = 'seat_filled' AND f.change_key <> c.change_key
            AND f.claimed_at >= o.sent_at
      )
)
"""


class Watcher(NamedTuple):
    recipient: Recipient
    alerts: dict[str, bool]


async def eligible_watchers(
    pool: asyncpg.Pool, sections: set[tuple[str, str]]
) -> dict[tuple[str, str], list[Watcher]]:
    if not sections:
        return {}
    terms, class_nbrs = zip(*sorted(sections), strict=True)
    rows = await pool.fetch(ELIGIBLE_WATCHERS, list(terms), list(class_nbrs))
    watchers: dict[tuple[str, str], list[Watcher]] = defaultdict(list)
    for row in rows:
        recipient = Recipient(watch_id=row["watch_id"], user_id=row["user_id"], email=row["email"])
        alerts = msgspec.json.decode(row["alerts"], type=dict[str, bool])
        watchers[(row["term"], row["class_nbr"])].append(Watcher(recipient, alerts))
    return watchers


async def told_about_opening(
    pool: asyncpg.Pool, candidates: Iterable[tuple[int, str]]
) -> set[tuple[int, str]]:
    """Of (watch, seat_filled change) pairs, those whose watch was told about the opening it ends."""
    pairs = sorted(set(candidates))
    if not pairs:
        return set()
    rows = await pool.fetch(TOLD_ABOUT_OPENING, [w for w, _ in pairs], [c for _, c in pairs])
    return {(row["watch_id"], row["change_key"]) for row in rows}
