"""Reads an ASU class-search response and picks out one section.

Pure: bytes in, `SectionState` out. Accepts the `refine=Y` shape and the Elasticsearch envelope, since
the API has been seen answering with both (see the ASU notes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from shared.asu import DAY_FLAGS, PLACEHOLDER_INSTRUCTORS
from shared.events import SectionState

_TIME_12H = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*([AaPp])\.?[Mm]\.?\s*$")
_TIME_24H = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?\s*$")

_decoder = msgspec.json.Decoder()


class CatalogFormatError(ValueError):
    """The response is not a class-search answer we understand."""


def find_section(payload: bytes, term: str, class_nbr: str) -> SectionState | None:
    """The section `class_nbr` in `term`, or None when the (fuzzy) search returned no such row."""
    try:
        document = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CatalogFormatError(f"class search answered with malformed JSON: {exc}") from exc
    for row, seat_info in _rows(document):
        if _text(row.get("CLASSNBR")) != class_nbr:
            continue
        row_term = _text(row.get("STRM"))
        if row_term and row_term != term:
            continue
        return _section(row, seat_info, term, class_nbr)
    return None


def _rows(document: Any) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(class fields, seatInfo) for every row, whichever shape the response has."""
    if isinstance(document, dict) and isinstance(document.get("classes"), list):
        for item in document["classes"]:
            if not isinstance(item, dict) or not isinstance(item.get("CLAS"), dict):
                raise CatalogFormatError("class search row without a CLAS object")
            seat_info = item.get("seatInfo")
            yield item["CLAS"], seat_info if isinstance(seat_info, dict) else {}
        return
    hits = document.get("hits") if isinstance(document, dict) else None
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
        for hit in hits["hits"]:
            if not isinstance(hit, dict) or not isinstance(hit.get("_source"), dict):
                raise CatalogFormatError("class search hit without a _source object")
            yield hit["_source"], {}
        return
    raise CatalogFormatError(
        "class search answered with an unknown shape (neither 'classes' nor 'hits.hits')"
    )


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
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; one such character would fail the detector's whole batch.
        return value.replace("\x00", "").strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _seat(seat_info: Mapping[str, Any], seat_key: str, row: Mapping[str, Any], row_key: str) -> Any:
    """seatInfo's int when it has one; the string field of the row otherwise."""
    value = seat_info.get(seat_key)
    return value if value is not None else row.get(row_key)


# No section seats this many; a larger number is garbage, and would overflow the detector's integer columns.
MAX_COUNT = 100_000


def _count(value: Any, label: str, where: str, *, default: int | None = None) -> int:
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise CatalogFormatError(f"{where}: {label} is not a whole number: {value!r}")
    if not 0 <= number <= MAX_COUNT:
        raise CatalogFormatError(f"{where}: {label} is out of range: {number}")
    return number


def _instructors(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CatalogFormatError(f"{where}: INSTRUCTORSLIST is not a list: {value!r}")
    names = (name.strip() for name in value if isinstance(name, str))
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
