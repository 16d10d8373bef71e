"""Who is told about a change: watchers of the changed sections who can receive email."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from services.notifier.email import Recipient

# One query for every section of the batch. Unsubscribed, bounced or complained users get nothing.
ELIGIBLE_WATCHERS = """
SELECT w.id AS watch_id, w.user_id, u.email, w.term, w.class_nbr
FROM unnest($1::text[], $2::text[]) AS c(term, class_nbr)
JOIN watch w ON w.term = c.term AND w.class_nbr = c.class_nbr
JOIN app_user u ON u.id = w.user_id
WHERE u.notifications_enabled AND u.email_status = 'ok'
ORDER BY w.id
"""


async def eligible_watchers(
    pool: asyncpg.Pool, sections: set[tuple[str, str]]
) -> dict[tuple[str, str], list[Recipient]]:
    if not sections:
        return {}
    terms, class_nbrs = zip(*sorted(sections), strict=True)
    rows = await pool.fetch(ELIGIBLE_WATCHERS, list(terms), list(class_nbrs))
    watchers: dict[tuple[str, str], list[Recipient]] = defaultdict(list)
    for row in rows:
        watchers[(row["term"], row["class_nbr"])].append(
            Recipient(watch_id=row["watch_id"], user_id=row["user_id"], email=row["email"])
        )
    return watchers
