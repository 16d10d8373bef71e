"""The sections to check: one query per cycle, on the `sections_to_check` view (migration 0004)."""

from __future__ import annotations

import asyncpg

# Watched sections, less those last seen inactive (cancelled); the view says why.
WATCHED_SECTIONS = "SELECT term, class_nbr FROM sections_to_check ORDER BY term, class_nbr"


async def watched_sections(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    return [(row["term"], row["class_nbr"]) for row in await pool.fetch(WATCHED_SECTIONS)]
