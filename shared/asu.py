"""ASU facts every service agrees on: term codes and the links students want."""

from __future__ import annotations

import re
from urllib.parse import quote_plus

# [0-9], not \d: \d also matches other scripts' digits, which are no ASU codes.
_TERM = re.compile(r"^2[0-9][0-9][147]$")
_CLASS_NBR = re.compile(r"^[0-9]{5}$")
# What the class search or a page shows in place of a name while no instructor is assigned.
PLACEHOLDER_INSTRUCTORS = frozenset({"staff", "tba", "to be announced"})
_SEASONS = {"1": "Spring", "4": "Summer", "7": "Fall"}
# The class search's per-day flags (`"Y"`/`"N"`) and how its DAYLIST abbreviates each day.
DAY_FLAGS = (
    ("MON", "M"),
    ("TUES", "T"),
    ("WED", "W"),
    ("THURS", "Th"),
    ("FRI", "F"),
    ("SAT", "Sa"),
    ("SUN", "Su"),
)
CATALOG_URL = "https://catalog.apps.asu.edu/catalog/classes/classlist"
RMP_SEARCH_URL = "https://www.ratemyprofessors.com/search/professors/15723"


def is_term(value: str) -> bool:
    """`"2" + two-digit year + season digit` (1 Spring, 4 Summer, 7 Fall), e.g. 2267 = Fall 2026."""
    return bool(_TERM.match(value))


def is_class_nbr(value: str) -> bool:
    return bool(_CLASS_NBR.match(value))


def term_label(term: str) -> str:
    if not is_term(term):
        return term
    return f"{_SEASONS[term[3]]} 20{term[1:3]}"


def term_code(year: int, season: str) -> str:
    digit = {name: code for code, name in _SEASONS.items()}[season]
    return f"2{year % 100:02d}{digit}"


def catalog_url(term: str, class_nbr: str) -> str:
    return f"{CATALOG_URL}?keywords={quote_plus(class_nbr)}&term={quote_plus(term)}"


def rate_my_professor_url(name: str) -> str | None:
    if not name or name.strip().lower() in PLACEHOLDER_INSTRUCTORS:
        return None
    return f"{RMP_SEARCH_URL}?q={quote_plus(name)}"


def instructor_label(instructors: tuple[str, ...] | list[str]) -> str:
    return ", ".join(instructors) if instructors else "Staff"
