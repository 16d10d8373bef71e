"""How old the stored state of watched sections is: one query on the `watched_section_freshness` view."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

FRESHNESS = """
SELECT count(checked_at) AS checked,
       count(*) - count(checked_at) AS unchecked,
       extract(epoch FROM now() - min(checked_at))::float8 AS oldest,
       extract(epoch FROM now() - percentile_disc(0.5) WITHIN GROUP (ORDER BY checked_at))::float8 AS median
FROM watched_section_freshness
"""


class Freshness(NamedTuple):
    checked: int
    unchecked: int
    # Seconds since the oldest / the median observation among checked sections; None when none is checked.
    oldest: float | None
    median: float | None


async def freshness(pool: asyncpg.Pool) -> Freshness:
    row = await pool.fetchrow(FRESHNESS)
    assert row is not None
    return Freshness(row["checked"], row["unchecked"], row["oldest"], row["median"])
