"""The sections that have watchers: one query per cycle."""

from __future__ import annotations

import asyncpg

WATCHED_SECTIONS = "SELECT DISTINCT term, class_nbr FROM watch ORDER BY term, class_nbr"


async def watched_sections(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    return [(row["term"], row["class_nbr"]) for row in await pool.fetch(WATCHED_SECTIONS)]
