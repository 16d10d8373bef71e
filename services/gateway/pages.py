"""The student's page and the small API it needs besides watches."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

import msgspec
from litestar import MediaType, Response, get

from shared.asu import term_code, term_label

STATIC = Path(__file__).parent / "static"

# The season a month belongs to, by the month its term starts: Spring in January, Summer in May,
# Fall in August.
_SEASONS = ("Spring", "Summer", "Fall")
_SEASON_START = {"Spring": 1, "Summer": 5, "Fall": 8}


class Term(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str


def upcoming_terms(today: date, count: int = 3) -> list[Term]:
    """The term running on `today` and the ones after it."""
    season = max((s for s in _SEASONS if _SEASON_START[s] <= today.month), key=_SEASON_START.__getitem__)
    year, index = today.year, _SEASONS.index(season)
    terms = []
    for _ in range(count):
        code = term_code(year, _SEASONS[index])
        terms.append(Term(code=code, label=term_label(code)))
        index += 1
        if index == len(_SEASONS):
            index, year = 0, year + 1
    return terms


@cache
def _index_html() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def index() -> Response[str]:
    """The single-page app: accounts, watches, live updates."""
    return Response(_index_html(), media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})


@get("/api/v1/terms")
async def terms() -> list[Term]:
    """Terms to offer when adding a watch, current first: `[{"code": "2267", "label": "Fall 2026"}, ...]`."""
    return upcoming_terms(date.today())
