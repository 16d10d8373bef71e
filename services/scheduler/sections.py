"""The sections to check: one query per cycle, on the `watched_section_status` view (migration 0008)."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg


class WatchedSection(NamedTuple):
    term: str
    class_nbr: str
    # The course, once the section has been seen; None before (it is then looked up by class number).
    subject: str | None
    catalog_nbr: str | None


# Watched sections, less cancelled ones and those of ended terms; sections retired as gone only when $1.
WATCHED_SECTIONS = (
    "SELECT term, class_nbr, subject, catalog_nbr FROM watched_section_status"
    " WHERE NOT (cancelled OR ended) AND (NOT gone OR $1) ORDER BY term, class_nbr"
)
# A retired section is looked at again once every this many windows (hourly at the default 5 minutes): one
# that comes back is then checked as before, at the cost of a request per hour for one that does not.
GONE_RECHECK_WINDOWS = 12


def rechecks_gone(window: int) -> bool:
    return window % GONE_RECHECK_WINDOWS == 0


async def watched_sections(pool: asyncpg.Pool, window: int) -> list[WatchedSection]:
    return [
        WatchedSection(row["term"], row["class_nbr"], row["subject"], row["catalog_nbr"])
        for row in await pool.fetch(WATCHED_SECTIONS, rechecks_gone(window))
    ]
