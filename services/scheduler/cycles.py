"""The last published cycle (table `scheduler_cycle`, owned by the scheduler; read by `pmc status`)."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import asyncpg

RECORD_CYCLE = """
INSERT INTO scheduler_cycle (id, check_window, sections, published, duplicates, finished_at)
VALUES (1, $1, $2, $3, $4, now())
ON CONFLICT (id) DO UPDATE SET check_window = EXCLUDED.check_window, sections = EXCLUDED.sections,
    published = EXCLUDED.published, duplicates = EXCLUDED.duplicates, finished_at = EXCLUDED.finished_at
"""
LAST_CYCLE = "SELECT check_window, sections, published, duplicates, finished_at FROM scheduler_cycle"


class Cycle(NamedTuple):
    window: int
    sections: int
    published: int
    duplicates: int
    finished_at: dt.datetime


async def record_cycle(
    pool: asyncpg.Pool, window: int, sections: int, published: int, duplicates: int
) -> None:
    await pool.execute(RECORD_CYCLE, window, sections, published, duplicates)


async def last_cycle(pool: asyncpg.Pool) -> Cycle | None:
    row = await pool.fetchrow(LAST_CYCLE)
    if row is None:
        return None
    return Cycle(
        row["check_window"], row["sections"], row["published"], row["duplicates"], row["finished_at"]
    )
