"""Sections the simulator holds, and how they look in the real class-search answer (refine=Y shape)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec

from shared.asu import DAY_FLAGS, is_class_nbr, is_term

_DAY_NAMES = frozenset(short for _, short in DAY_FLAGS)
_TIME = re.compile(r"^(1[0-2]|[1-9]):[0-5]\d (AM|PM)$")
# Per season digit: first class day, last class day, last day of the term (finals included; the
# captured Fall 2026 answer says classes end 12-04 and the term 12-14).
_TERM_DATES = {
    "1": ("01-12", "05-01", "05-08"),
    "4": ("05-18", "08-07", "08-07"),
    "7": ("08-20", "12-04", "12-14"),
}
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

Count = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class SimSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One section as the control API takes it (`POST /_sim/sections`) and lists it."""

    term: str
    class_nbr: str
    subject: str
    catalog_nbr: str
    title: str
    enrl_cap: Count
    enrl_tot: Count
    instructors: list[str] = []
    section: str = ""
    component: str = "LEC"
    days: str = ""
    start_time: str | None = None
    end_time: str | None = None
    location: str = "TEMPE"
    instruction_mode: str = "P"
    reserved: bool = False
    class_status: str = "A"
    wait_cap: Count = 0
    wait_tot: Count = 0
    # "YYYY-MM-DD": the term's last day as TERMENDDATE says it; None derives it from the term code.
    # Tests of ended terms give a past date.
    term_end: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.term, self.class_nbr)


class SectionPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`PATCH /_sim/sections/{term}/{class_nbr}`: only the fields given change."""

    enrl_cap: Count | msgspec.UnsetType = msgspec.UNSET
    enrl_tot: Count | msgspec.UnsetType = msgspec.UNSET
    instructors: list[str] | msgspec.UnsetType = msgspec.UNSET
    class_status: str | msgspec.UnsetType = msgspec.UNSET


class InvalidSection(ValueError):
    pass


def check_section(section: SimSection) -> SimSection:
    """`section` if it is something the real catalog could hold; InvalidSection names what is wrong."""
    problems: list[str] = []
    if not is_term(section.term):
        problems.append(f"term {section.term!r} is not a term code like 2271")
    if not is_class_nbr(section.class_nbr):
        problems.append(f"class_nbr {section.class_nbr!r} is not 5 digits")
    if not section.subject.strip() or not section.catalog_nbr.strip() or not section.title.strip():
        problems.append("subject, catalog_nbr and title must not be empty")
    unknown_days = set(section.days.split()) - _DAY_NAMES
    if unknown_days:
        problems.append(f"days {section.days!r}: use M T W Th F Sa Su separated by spaces")
    for label, value in (("start_time", section.start_time), ("end_time", section.end_time)):
        if value is not None and not _TIME.match(value):
            problems.append(f"{label} {value!r} is not like '4:30 PM'")
    if (section.start_time is None) != (section.end_time is None):
        problems.append("give both start_time and end_time, or neither (online)")
    if section.term_end is not None and not _is_date(section.term_end):
        problems.append(f"term_end {section.term_end!r} is not a date like 2026-12-14")
    if problems:
        raise InvalidSection("; ".join(problems))
    return section


def patched(section: SimSection, patch: SectionPatch) -> SimSection:
    changes = {
        name: getattr(patch, name)
        for name in patch.__struct_fields__
        if getattr(patch, name) is not msgspec.UNSET
    }
    return msgspec.structs.replace(section, **changes)


def clas_row(section: SimSection) -> dict[str, Any]:
    """The `CLAS` object of one class-search row: the real field names, string-typed like the real API."""
    begin, end, term_end = _term_dates(section.term)
    if section.term_end is not None:
        term_end = f"{section.term_end} 00:00:00.0"
    days = set(section.days.split())
    class_section = section.section or f"{int(section.class_nbr) % 9000 + 1000}"
    row: dict[str, Any] = {
        "STRM": section.term,
        "CLASSNBR": section.class_nbr,
        "CLASSSECTION": class_section,
        "SESSIONCODE": "C",
        "SUBJECT": section.subject,
        "SUBJECTFORSORTING": section.subject,
        "CATALOGNBR": section.catalog_nbr,
        "CATALOGNBRFORSORTING": section.catalog_nbr,
        "CAMPUS": section.location,
        "LOCATION": section.location,
        "TITLE": section.title,
        "COURSETITLELONG": section.title,
        "STARTDATE": begin,
        "STARTTIME": section.start_time,
        "ENDDATE": end,
        "ENDTIME": section.end_time,
        **{flag: "Y" if short in days else "N" for flag, short in DAY_FLAGS},
        "FACILITYID": "INTRT"
        if section.instruction_mode == "OL"
        else f"SIM{int(section.class_nbr) % 300:03d}",
        "ENRLTOT": str(section.enrl_tot),
        "ENRLCAP": str(section.enrl_cap),
        "WAITTOT": str(section.wait_tot),
        "WAITCAP": str(section.wait_cap),
        "COMPONENTPRIMARY": section.component,
        "ASSOCIATEDCLASS": class_section,
        "ENRLSTAT": "O" if section.enrl_tot < section.enrl_cap else "C",
        "CLASSSTAT": section.class_status,
        "INSTRUCTIONMODE": section.instruction_mode,
        "TERMBEGINDATE": begin,
        "TERMENDDATE": term_end,
        "HASACTIVERESERVEDSEATS": "Y" if section.reserved else "N",
        "DAYLIST": section.days,
        "INSTRUCTORSLIST": list(section.instructors),
        "STARTTIMES": [section.start_time] if section.start_time else [],
        "ENDTIMES": [section.end_time] if section.end_time else [],
        "id": section.class_nbr,
    }
    return row


def class_item(section: SimSection) -> dict[str, Any]:
    """One element of `classes`: the CLAS object plus the wrapper fields and the `seatInfo` ints."""
    row = clas_row(section)
    return {
        "CLAS": row,
        "SUBJECTNUMBER": f"{section.subject} {section.catalog_nbr}",
        "SECTIONCLASSNUMBER": f"{row['CLASSSECTION']}-({section.class_nbr})",
        "DAYLIST": [section.days] if section.days else [],
        "seatInfo": {"ENRL_CAP": section.enrl_cap, "ENRL_TOT": section.enrl_tot},
    }


def search_answer(
    matched: Sequence[SimSection], start: int, size: int, scroll_id: str | None
) -> dict[str, Any]:
    """One page of a search: `size` rows of `matched` from `start`; totals and aggregations of all of it."""
    locations: dict[str, int] = {}
    for section in matched:
        locations[section.location] = locations.get(section.location, 0) + 1
    return {
        "classes": [class_item(section) for section in matched[start : start + size]],
        "aggregations": {"LOCATION": locations},
        "scrollId": scroll_id if matched else None,
        "total": {"value": len(matched), "relation": "eq"},
    }


def by_class_nbr(sections: Iterable[SimSection], term: str, class_nbr: str) -> list[SimSection]:
    """Like the real search: neighbours sharing the first four digits come first, then the exact row.

    The real API is fuzzy; putting a near miss ahead of the exact match is what catches scrapers that
    take the first row.
    """
    in_term = [section for section in sections if section.term == term]
    exact = [section for section in in_term if section.class_nbr == class_nbr]
    if not exact:
        return []
    near = sorted(
        (s for s in in_term if s.class_nbr != class_nbr and s.class_nbr[:4] == class_nbr[:4]),
        key=lambda s: s.class_nbr,
    )
    return [*near, *exact]


def by_course(sections: Iterable[SimSection], term: str, subject: str, catalog_nbr: str) -> list[SimSection]:
    """`subject=CSE&catalogNbr=3` matches CSE 310, 340...: the real query is a prefix match."""
    return sorted(
        (
            s
            for s in sections
            if s.term == term
            and s.subject.upper() == subject.strip().upper()
            and s.catalog_nbr.startswith(catalog_nbr.strip())
        ),
        key=lambda s: (s.catalog_nbr, s.class_nbr),
    )


def by_keywords(sections: Iterable[SimSection], term: str, keywords: str) -> list[SimSection]:
    words = keywords.lower().split()
    return sorted(
        (
            s
            for s in sections
            if s.term == term
            and all(
                word in f"{s.subject} {s.catalog_nbr} {s.title} {' '.join(s.instructors)}".lower()
                for word in words
            )
        ),
        key=lambda s: (s.subject, s.catalog_nbr, s.class_nbr),
    )


def _term_dates(term: str) -> tuple[str, str, str]:
    """First class day, last class day and last term day, in the class search's date format."""
    dates = _TERM_DATES.get(term[-1:], _TERM_DATES["1"])
    year = f"20{term[1:3]}"
    begin, end, term_end = (f"{year}-{day} 00:00:00.0" for day in dates)
    return begin, end, term_end


def _is_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True
