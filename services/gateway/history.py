"""A section's seats over time: the samples the detector keeps (migration 0010), read through the
`section_seat_history` view, for the API and the dashboard's sparkline."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from services.gateway.bodies import answers
from services.gateway.watches import WatchId

# The detector keeps 180 days of samples: a longer range would only look empty.
MAX_DAYS = 180
DEFAULT_DAYS = 14


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    open_seats: int
    enrl_cap: int
    enrl_tot: int


class HistoryPoint(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    open_seats: int
    enrl_cap: int


class History(msgspec.Struct, frozen=True, kw_only=True):
    samples: list[HistoryPoint]


# The samples since $3 of each section, and the last one before $3: the seats as they were when the
# range began (a section whose seats did not move has no sample in it). One query for any number of
# sections; each part reads the (term, class_nbr, at) primary key.
SELECT_HISTORY = """
WITH k AS (SELECT DISTINCT term, class_nbr FROM unnest($1::text[], $2::text[]) AS k(term, class_nbr))
SELECT h.term, h.class_nbr, h.at, h.open_seats, h.enrl_cap, h.enrl_tot
FROM k JOIN section_seat_history AS h ON h.term = k.term AND h.class_nbr = k.class_nbr AND h.at >= $3
UNION ALL
SELECT k.term, k.class_nbr, b.at, b.open_seats, b.enrl_cap, b.enrl_tot
FROM k CROSS JOIN LATERAL (
    SELECT h.at, h.open_seats, h.enrl_cap, h.enrl_tot FROM section_seat_history AS h
    WHERE h.term = k.term AND h.class_nbr = k.class_nbr AND h.at < $3
    ORDER BY h.at DESC LIMIT 1
) AS b
ORDER BY 1, 2, 3
"""
SELECT_OWN_WATCH = "SELECT term, class_nbr FROM watch WHERE id = $1 AND user_id = $2"


async def seat_history(
    pool: asyncpg.Pool, term_class_pairs: list[tuple[str, str]], since: datetime
) -> dict[tuple[str, str], list[Sample]]:
    """The seat samples of these sections since `since`, oldest first, each list led by the last sample
    before `since` when there is one (its `at` is then older than `since`). Sections without samples are
    absent. One query, however many sections."""
    if not term_class_pairs:
        return {}
    rows = await pool.fetch(
        SELECT_HISTORY,
        [term for term, _ in term_class_pairs],
        [class_nbr for _, class_nbr in term_class_pairs],
        since,
    )
    history: dict[tuple[str, str], list[Sample]] = {}
    for row in rows:
        history.setdefault((row["term"], row["class_nbr"]), []).append(
            Sample(
                at=row["at"],
                open_seats=row["open_seats"],
                enrl_cap=row["enrl_cap"],
                enrl_tot=row["enrl_tot"],
            )
        )
    return history


@get(
    "/api/v1/watches/{watch_id:int}/history",
    responses=answers(
        {
            400: "The watch id or `days` is out of range.",
            401: "Not logged in.",
            404: "No such watch, or it belongs to someone else.",
        }
    ),
)
async def watch_history(
    watch_id: WatchId,
    user_id: NamedDependency[int],
    pool: NamedDependency[asyncpg.Pool],
    days: Annotated[int, Parameter(query="days", ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
) -> History:
    """The open seats of a watched section over the last `days` days (1 to 180, default 14):
    200 `{"samples": [{"at", "open_seats", "enrl_cap"}]}`, oldest first, one sample each time the seats
    changed; the first may be older than the range (the seats when it began). Empty until the section was
    found. 404 when the watch does not exist or belongs to someone else; 401 when not logged in."""
    watch = await pool.fetchrow(SELECT_OWN_WATCH, watch_id, user_id)
    if watch is None:
        raise NotFoundException(detail="no such watch")
    key = (watch["term"], watch["class_nbr"])
    since = datetime.now(UTC) - timedelta(days=days)
    samples = (await seat_history(pool, [key], since)).get(key, [])
    return History(
        samples=[HistoryPoint(at=s.at, open_seats=s.open_seats, enrl_cap=s.enrl_cap) for s in samples]
    )


def _days(days: int) -> str:
    return "day" if days == 1 else f"{days} days"


def sparkline_summary(samples: list[Sample], days: int) -> str:
    """What the sparkline shows, in words (its accessible name)."""
    if not samples:
        return "No seat history yet"
    seats = [s.open_seats for s in samples]
    low, high, now = min(seats), max(seats), seats[-1]
    span = f"Open seats over the last {_days(days)}"
    if low == high:
        return f"{span}: {now} throughout"
    return f"{span}: {low} to {high}, now {now}"


def sparkline_svg(
    samples: list[Sample],
    width: int = 120,
    height: int = 24,
    *,
    days: int = DEFAULT_DAYS,
    now: datetime | None = None,
) -> str:
    """A small inline SVG of the open seats over the last `days` days up to `now`: a step line (seats
    stay as they are between two samples), from the first sample in the range (or the range's start when
    an older sample says how it began) to `now`, scaled from 0 to the highest count. `role="img"` with the
    summary as its name and `<title>`; `currentColor` strokes, so the page's CSS colours it."""
    width, height, days = max(int(width), 8), max(int(height), 8), max(int(days), 1)
    end = now or datetime.now(UTC)
    start = end - timedelta(days=days)
    ordered = sorted(samples, key=lambda s: s.at)
    before = [s for s in ordered if s.at <= start]
    # What the range saw: the seats it began with and every change in it (a sample later than `now`, from
    # a clock ahead of this one, is drawn at `now`).
    shown = before[-1:] + [s for s in ordered if start < s.at]
    summary = html.escape(sparkline_summary(shown, days), quote=True)
    opening = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{summary}"><title>{summary}</title>'
    )
    if not shown:
        return opening + "</svg>"
    pad = 2.0  # room for the stroke and the end dot inside the box
    top = max(max(s.open_seats for s in shown), 1)
    seconds = (end - start).total_seconds()

    def x(at: datetime) -> float:
        clamped = min(max(at, start), end)
        return pad + (width - 2 * pad) * (clamped - start).total_seconds() / seconds

    def y(open_seats: int) -> float:
        return height - pad - (height - 2 * pad) * max(open_seats, 0) / top

    path = [f"M{x(shown[0].at):.1f} {y(shown[0].open_seats):.1f}"]
    for sample in shown[1:]:
        path.append(f"H{x(sample.at):.1f} V{y(sample.open_seats):.1f}")
    last_x, last_y = width - pad, y(shown[-1].open_seats)
    path.append(f"H{last_x:.1f}")
    return (
        opening + f'<path d="{" ".join(path)}" fill="none" stroke="currentColor" stroke-width="1.5" '
        'stroke-linejoin="round"/>'
        + f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="1.8" fill="currentColor"/></svg>'
    )
