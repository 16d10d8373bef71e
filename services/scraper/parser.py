"""Reads ASU class-search answers: one section (`find_section`) or one page of a whole course
(`read_course_page`).

Pure: bytes in, `SectionState`s out. Accepts the `refine=Y` shape and the Elasticsearch envelope, since
the API has been seen answering with both (see the ASU notes).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from shared.asu import DAY_FLAGS, PLACEHOLDER_INSTRUCTORS, is_class_nbr
from shared.events import SectionState

# [0-9], not \d: \d also matches other scripts' digits.
_TIME_12H = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})\s*([AaPp])\.?[Mm]\.?\s*$")
_TIME_24H = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})(?::[0-9]{2}(?:\.[0-9]+)?)?\s*$")
# "2026-12-14 00:00:00.0" (what the class search sends), "2026-12-14T00:00:00", "2026-12-14".
_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T].*)?$")
# "1011-(66445)": the wrapper's section label, the only other place a row names its class number.
_LABELLED_CLASS_NBR = re.compile(r"\(([0-9]{5})\)\s*$")

# No section seats this many; a larger number is garbage, and would overflow the detector's integer columns.
MAX_COUNT = 100_000

_decoder = msgspec.json.Decoder()


class CatalogFormatError(ValueError):
    """The response is not a class-search answer we understand."""


class CoursePage(NamedTuple):
    """One page of a whole-course search, read row by row: one bad row never costs the others."""

    # Rows of exactly the course asked for (in the term asked for), one per class number: the first row
    # with a class number decides it, later duplicates are ignored.
    sections: tuple[SectionState, ...]
    # What was wrong with rows that are (or may be) of this course and could not be read, for logs.
    refused: tuple[str, ...]
    # Class numbers of such rows: the caller must not report them "not found".
    unreadable: tuple[str, ...]
    # Rows in this page, of any course: with `total` and `scroll_id` it tells whether to ask for more.
    rows: int
    # Hits the whole search has, as the answer claims; None when it does not say (or says garbage).
    total: int | None
    # Where the next page is; None when the answer names none.
    scroll_id: str | None


class _Row(NamedTuple):
    fields: Mapping[str, Any] | None  # CLAS / _source; None when the row has no such object
    seat_info: Mapping[str, Any]
    wrapper: Mapping[str, Any]  # the `classes` item or the hit around the fields; {} when not an object
    problem: str  # why `fields` is None


def find_section(payload: bytes, term: str, class_nbr: str) -> SectionState | None:
    """The section `class_nbr` in `term`, or None when the (fuzzy) search returned no such row."""
    for row in _rows(_decode(payload)):
        if row.fields is None:
            raise CatalogFormatError(row.problem)
        if _text(row.fields.get("CLASSNBR")) != class_nbr:
            continue
        row_term = _text(row.fields.get("STRM"))
        if row_term and row_term != term:
            continue
        return _section(row.fields, row.seat_info, term, class_nbr)
    return None


def read_course_page(payload: bytes, term: str, subject: str, catalog_nbr: str) -> CoursePage:
    """The sections of the course `subject catalog_nbr` in `term` that one page of the search holds.

    The search is a prefix match (CSE 310 also brings CSE 310L, CSE 3100...): rows of other courses or
    other terms are skipped. Raises CatalogFormatError only when the answer as a whole is not a class
    search (malformed JSON, unknown envelope); a row that cannot be read is reported in `refused`.
    """
    document = _decode(payload)
    rows = _rows(document)
    wanted = (_norm(subject), _norm(catalog_nbr))
    sections: dict[str, SectionState] = {}
    refused: list[str] = []
    unreadable: dict[str, None] = {}  # a dict keeps the order and drops repeats
    decided: set[str] = set()
    for number, row in enumerate(rows, start=1):
        course = _course_of(row)
        if course is not None and course != wanted:
            continue
        row_term = _text((row.fields or {}).get("STRM"))
        if row_term and row_term != term:
            continue
        class_nbr = _class_nbr_of(row)
        if class_nbr in decided:
            continue
        if class_nbr is not None:
            decided.add(class_nbr)
        read = _read_row(row, course, class_nbr, term)
        if isinstance(read, SectionState):
            sections[read.class_nbr] = read
            continue
        refused.append(f"row {number}: {read}")
        if class_nbr is not None:
            unreadable[class_nbr] = None
    return CoursePage(
        sections=tuple(sections.values()),
        refused=tuple(refused),
        unreadable=tuple(unreadable),
        rows=len(rows),
        total=_total(document),
        scroll_id=_scroll_id(document),
    )


def _read_row(
    row: _Row, course: tuple[str, str] | None, class_nbr: str | None, term: str
) -> SectionState | str:
    """The section in a row of the course asked for (or of no known course), or what is wrong with it."""
    if row.fields is None:
        return f"class {class_nbr or '(unknown)'}: {row.problem}"
    if course is None:
        # It may be one of ours: saying so beats silently missing a section.
        return f"class {class_nbr or '(unknown)'}: row names no SUBJECT and CATALOGNBR"
    if class_nbr is None:
        return f"{' '.join(course)}: class number is not 5 digits: {_shown(row.fields.get('CLASSNBR'))}"
    try:
        return _section(row.fields, row.seat_info, term, class_nbr)
    except CatalogFormatError as exc:
        return str(exc)


def _decode(payload: bytes) -> Any:
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CatalogFormatError(f"class search answered with malformed JSON: {exc}") from exc


def _rows(document: Any) -> list[_Row]:
    """Every row, whichever shape the response has; rows that are not objects are kept, as problems."""
    if isinstance(document, dict) and isinstance(document.get("classes"), list):
        rows = []
        for item in document["classes"]:
            wrapper = item if isinstance(item, dict) else {}
            fields = wrapper.get("CLAS")
            seat_info = wrapper.get("seatInfo")
            rows.append(
                _Row(
                    fields if isinstance(fields, dict) else None,
                    seat_info if isinstance(seat_info, dict) else {},
                    wrapper,
                    "class search row without a CLAS object",
                )
            )
        return rows
    hits = document.get("hits") if isinstance(document, dict) else None
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
        rows = []
        for hit in hits["hits"]:
            wrapper = hit if isinstance(hit, dict) else {}
            fields = wrapper.get("_source")
            rows.append(
                _Row(
                    fields if isinstance(fields, dict) else None,
                    {},
                    wrapper,
                    "class search hit without a _source object",
                )
            )
        return rows
    raise CatalogFormatError(
        "class search answered with an unknown shape (neither 'classes' nor 'hits.hits')"
    )


def _norm(value: Any) -> str:
    return _text(value).upper()


def _course_of(row: _Row) -> tuple[str, str] | None:
    """(SUBJECT, CATALOGNBR) of a row; the wrapper's "CSE 310" when the fields lack them; None if unknown."""
    fields = row.fields or {}
    subject, catalog_nbr = _norm(fields.get("SUBJECT")), _norm(fields.get("CATALOGNBR"))
    if subject and catalog_nbr:
        return subject, catalog_nbr
    parts = _norm(row.wrapper.get("SUBJECTNUMBER")).split()
    if len(parts) == 2:
        return parts[0], parts[1]
    return None


def _class_nbr_of(row: _Row) -> str | None:
    """The row's class number when it has a readable one (CLASSNBR, else the wrapper's "1011-(66445)")."""
    class_nbr = _text((row.fields or {}).get("CLASSNBR"))
    if is_class_nbr(class_nbr):
        return class_nbr
    if row.fields is not None and class_nbr:
        return None
    labelled = _LABELLED_CLASS_NBR.search(_text(row.wrapper.get("SECTIONCLASSNUMBER")))
    return labelled[1] if labelled else None


def _total(document: Mapping[str, Any]) -> int | None:
    hits = document.get("hits")
    claims = [document.get("total"), hits.get("total") if isinstance(hits, dict) else None]
    for claim in claims:
        value = claim.get("value") if isinstance(claim, dict) else claim
        number = _whole(value)
        if number is not None:
            return number
    return None


def _scroll_id(document: Mapping[str, Any]) -> str | None:
    for key in ("scrollId", "_scroll_id"):
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            # Opaque: sent back exactly as received.
            return value
    return None


def _section(row: Mapping[str, Any], seat_info: Mapping[str, Any], term: str, class_nbr: str) -> SectionState:
    where = f"class {class_nbr} in term {term}"
    enrl_cap = _count(_seat(seat_info, "ENRL_CAP", row, "ENRLCAP"), "enrolment cap", where)
    enrl_tot = _count(_seat(seat_info, "ENRL_TOT", row, "ENRLTOT"), "enrolment total", where)
    return SectionState(
        term=term,
        class_nbr=class_nbr,
        subject=_text(row.get("SUBJECT")),
        catalog_nbr=_text(row.get("CATALOGNBR")),
        title=_text(row.get("TITLE")) or _text(row.get("COURSETITLELONG")),
        section=_text(row.get("CLASSSECTION")),
        component=_text(row.get("COMPONENTPRIMARY")),
        instructors=_instructors(row.get("INSTRUCTORSLIST"), where),
        enrl_cap=enrl_cap,
        enrl_tot=enrl_tot,
        open_seats=max(0, enrl_cap - enrl_tot),
        wait_cap=_count(row.get("WAITCAP"), "waitlist cap", where, default=0),
        wait_tot=_count(row.get("WAITTOT"), "waitlist total", where, default=0),
        reserved_seats=_text(row.get("HASACTIVERESERVEDSEATS")).upper() == "Y",
        days=_days(row),
        start_time=_clock(row.get("STARTTIME")),
        end_time=_clock(row.get("ENDTIME")),
        location=_text(row.get("LOCATION")),
        instruction_mode=_text(row.get("INSTRUCTIONMODE")),
        class_status=_text(row.get("CLASSSTAT")) or "A",
        term_end=_date(row.get("TERMENDDATE")),
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; one such character would fail the detector's whole batch.
        return value.replace("\x00", "").strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _shown(value: Any) -> str:
    """`value` for a message: long junk must not flood the logs."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _seat(seat_info: Mapping[str, Any], seat_key: str, row: Mapping[str, Any], row_key: str) -> Any:
    """seatInfo's int when it has one; the string field of the row otherwise."""
    value = seat_info.get(seat_key)
    return value if value is not None else row.get(row_key)


def _whole(value: Any) -> int | None:
    """A non-negative whole number given as an int or a string of ASCII digits; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str):
        return _digits(value)
    return None


def _digits(value: str) -> int | None:
    text = value.strip()
    # int() refuses strings over 4,300 digits (ValueError); 18 already is far past any real number here.
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _count(value: Any, label: str, where: str, *, default: int | None = None) -> int:
    if (value is None or value == "") and default is not None:
        return default
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        number = _digits(value)
    if number is None:
        raise CatalogFormatError(f"{where}: {label} is not a whole number: {_shown(value)}")
    if not 0 <= number <= MAX_COUNT:
        raise CatalogFormatError(f"{where}: {label} is out of range: {_shown(value)}")
    return number


def _instructors(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CatalogFormatError(f"{where}: INSTRUCTORSLIST is not a list: {_shown(value)}")
    names = (_text(name) for name in value if isinstance(name, str))
    # An empty list is how the class search says Staff; a placeholder name must mean the same, or
    # Staff → a real name would read as one instructor replacing another.
    return tuple(name for name in names if name and name.lower() not in PLACEHOLDER_INSTRUCTORS)


def _days(row: Mapping[str, Any]) -> str:
    listed = _text(row.get("DAYLIST"))
    if listed:
        return " ".join(listed.split())
    return " ".join(short for flag, short in DAY_FLAGS if _text(row.get(flag)).upper() == "Y")


def _clock(value: Any) -> str | None:
    """Either "4:30 PM" or "16:30:00" → "4:30 PM"; no time (online sections) → None.

    A time in a format we do not know is passed on as written: it is only shown to students, and a
    surprise there must not stop seat alerts.
    """
    text = _text(value)
    if not text:
        return None
    if match := _TIME_12H.match(text):
        hour, minute = int(match[1]), int(match[2])
        if 1 <= hour <= 12 and minute < 60:
            return f"{hour}:{minute:02d} {match[3].upper()}M"
    elif match := _TIME_24H.match(text):
        hour, minute = int(match[1]), int(match[2])
        if hour < 24 and minute < 60:
            return f"{(hour % 12) or 12}:{minute:02d} {'AM' if hour < 12 else 'PM'}"
    return text


def _date(value: Any) -> str:
    """A class-search date ("2026-12-14 00:00:00.0") as "2026-12-14"; "" when absent or not a real date.

    Unreadable means unknown, not an error: the term's end only tells the detector when to stop watching.
    """
    match = _DATE.match(_text(value))
    if match is None:
        return ""
    try:
        return datetime.date(int(match[1]), int(match[2]), int(match[3])).isoformat()
    except ValueError:
        return ""
