"""`read_course_page`: one page of a whole-course class search, read row by row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scraper.parser import MAX_COUNT, CatalogFormatError, CoursePage, find_section, read_course_page
from tests.infra import ASU_CAPTURE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TERM = "2271"
CAPTURED_CLASS_NBRS = (
    "66445",
    "70380",
    "74350",
    "75092",
    "65518",
    "70381",
    "75093",
    "79832",
    "81859",
    "81860",
    "81861",
)


@pytest.fixture(scope="module")
def capture() -> bytes:
    if not ASU_CAPTURE.exists():
        pytest.skip(f"needs ../shared (ASU capture): {ASU_CAPTURE} is missing")
    return ASU_CAPTURE.read_bytes()


@pytest.fixture(scope="module")
def refine_page() -> CoursePage:
    return read_course_page((FIXTURES / "asu_course_page.json").read_bytes(), TERM, "CSE", "240")


@pytest.fixture(scope="module")
def hits_page() -> CoursePage:
    return read_course_page((FIXTURES / "asu_course_hits.json").read_bytes(), TERM, "CSE", "240")


def by_number(page: CoursePage) -> dict[str, Any]:
    return {section.class_nbr: section for section in page.sections}


# The real answer.


def test_captured_page_gives_every_section_of_the_course(capture: bytes) -> None:
    page = read_course_page(capture, "2267", "CSE", "310")
    assert tuple(s.class_nbr for s in page.sections) == CAPTURED_CLASS_NBRS
    assert (page.refused, page.unreadable, page.rows, page.total) == ((), (), 11, 11)
    assert page.scroll_id is not None
    assert page.scroll_id.startswith("FGluY2x1ZGVfY29udGV4dF91dWlk")
    assert {s.term_end for s in page.sections} == {"2026-12-14"}
    assert {s.course for s in page.sections} == {"CSE 310"}


def test_captured_page_reads_each_row_as_find_section_does(capture: bytes) -> None:
    page = read_course_page(capture, "2267", "CSE", "310")
    for section in page.sections:
        assert find_section(capture, "2267", section.class_nbr) == section
    lecture = by_number(page)["66445"]
    assert (lecture.enrl_cap, lecture.enrl_tot, lecture.open_seats) == (150, 81, 69)
    assert (lecture.days, lecture.start_time, lecture.instructors) == ("M W", "4:30 PM", ("Nakul Gopalan",))


@pytest.mark.parametrize(
    ("term", "subject", "catalog_nbr"),
    [("2271", "CSE", "310"), ("2267", "CSE", "31"), ("2267", "CSE", "3100"), ("2267", "MAT", "310")],
)
def test_captured_page_has_nothing_for_other_courses_or_terms(
    capture: bytes, term: str, subject: str, catalog_nbr: str
) -> None:
    page = read_course_page(capture, term, subject, catalog_nbr)
    assert (page.sections, page.refused, page.unreadable) == ((), (), ())
    assert page.rows == 11


# Our own page in the refine=Y shape (tests/fixtures/asu_course_page.json).


def test_sections_of_exactly_the_course_first_row_wins(refine_page: CoursePage) -> None:
    # 71250 is CSE 240L, 71251 CSE 2400, 71252 MAT 240, 71253 CSE 24; 71246 is of another term;
    # 71240 comes twice and the first row is the one read.
    assert [s.class_nbr for s in refine_page.sections] == ["71240", "71241", "71242", "71247"]
    assert {s.course for s in refine_page.sections} == {"CSE 240"}
    assert by_number(refine_page)["71240"].enrl_tot == 117
    assert refine_page.rows == 13


def test_rows_are_read_fully(refine_page: CoursePage) -> None:
    sections = by_number(refine_page)
    lecture = sections["71240"]
    assert (lecture.enrl_cap, lecture.enrl_tot, lecture.open_seats) == (120, 117, 3)
    assert (lecture.wait_cap, lecture.wait_tot, lecture.reserved_seats) == (10, 3, True)
    assert (lecture.days, lecture.start_time, lecture.end_time) == ("T Th", "10:30 AM", "11:45 AM")
    assert (lecture.term, lecture.term_end, lecture.title) == (
        TERM,
        "2027-05-08",
        "Introduction to Programming Languages",
    )
    online = sections["71241"]
    assert (online.open_seats, online.instructors, online.start_time, online.location) == (
        0,
        (),
        None,
        "ASUONLINE",
    )
    over = sections["71242"]
    assert (over.enrl_cap, over.enrl_tot, over.open_seats) == (30, 33, 0)
    assert over.instructors == ("'KC' Kiran Chaudhry", "Ruth Abernathy")
    # seatInfo with strings instead of ints, and a TERMENDDATE without a time.
    strings = sections["71247"]
    assert (strings.enrl_cap, strings.enrl_tot, strings.term_end) == (60, 12, "2027-05-08")


def test_bad_rows_are_refused_one_by_one(refine_page: CoursePage) -> None:
    assert refine_page.unreadable == ("71243", "71244", "71245")
    assert len(refine_page.refused) == 3
    junk, absurd, no_clas = refine_page.refused
    assert "class 71243" in junk
    assert "enrolment cap is not a whole number: 'TBD'" in junk
    assert "class 71244" in absurd
    assert "out of range" in absurd
    assert "class 71245" in no_clas
    assert "without a CLAS object" in no_clas


def test_paging_fields(refine_page: CoursePage) -> None:
    assert (refine_page.total, refine_page.scroll_id) == (213, "c2ltdWxhdGVkLXNjcm9sbC1jc2UyNDAtcGFnZTE")


def test_course_asked_for_is_normalised() -> None:
    payload = (FIXTURES / "asu_course_page.json").read_bytes()
    assert read_course_page(payload, TERM, " cse ", " 240 ") == read_course_page(payload, TERM, "CSE", "240")


def test_course_of_only_near_misses_is_empty_not_refused() -> None:
    payload = (FIXTURES / "asu_course_page.json").read_bytes()
    page = read_course_page(payload, TERM, "MAT", "240")
    # MAT 240's only row has junk counts: it is of the course asked, so refused, never silently dropped.
    assert page.sections == ()
    assert page.unreadable == ("71252",)
    lab = read_course_page(payload, TERM, "CSE", "240L")
    assert [s.class_nbr for s in lab.sections] == ["71250"]


# Our own page in the Elasticsearch envelope (tests/fixtures/asu_course_hits.json).


def test_elasticsearch_envelope_with_24_hour_times(hits_page: CoursePage) -> None:
    assert [s.class_nbr for s in hits_page.sections] == ["71260"]
    section = hits_page.sections[0]
    assert (section.start_time, section.end_time, section.days) == ("9:00 AM", "10:15 AM", "M W F")
    assert (section.open_seats, section.term_end) == (2, "2027-05-08")
    assert hits_page.unreadable == ("71261",)
    assert len(hits_page.refused) == 2
    assert "enrolment total is not a whole number: 'many'" in hits_page.refused[0]
    assert "without a _source object" in hits_page.refused[1]
    assert (hits_page.rows, hits_page.total) == (4, 4)
    assert hits_page.scroll_id == "c2ltdWxhdGVkLWVzLXNjcm9sbC1jc2UyNDA"


# Small answers built here.


def row(class_nbr: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "STRM": TERM,
        "CLASSNBR": class_nbr,
        "SUBJECT": "CSE",
        "CATALOGNBR": "240",
        "TITLE": "Introduction to Programming Languages",
        "ENRLCAP": "40",
        "ENRLTOT": "39",
    }
    base.update(fields)
    return base


def answer(*rows: Any, **top: Any) -> bytes:
    return json.dumps({"classes": [{"CLAS": r} for r in rows], **top}).encode()


@pytest.mark.parametrize(
    ("top", "total", "scroll_id"),
    [
        ({"total": {"value": 7}, "scrollId": "abc"}, 7, "abc"),
        ({"total": 7, "_scroll_id": "def"}, 7, "def"),
        ({"total": {"value": "7"}}, 7, None),
        ({"total": {"value": -1}, "scrollId": ""}, None, None),
        ({"total": {"value": "lots"}, "scrollId": "   "}, None, None),
        ({"total": True, "scrollId": 12}, None, None),
        ({}, None, None),
    ],
)
def test_total_and_scroll_id_forms(top: dict[str, Any], total: int | None, scroll_id: str | None) -> None:
    page = read_course_page(answer(row("71270"), **top), TERM, "CSE", "240")
    assert (page.total, page.scroll_id) == (total, scroll_id)


def test_total_in_the_elasticsearch_envelope() -> None:
    payload = json.dumps({"hits": {"total": {"value": 12}, "hits": []}, "_scroll_id": "x"}).encode()
    assert read_course_page(payload, TERM, "CSE", "240") == CoursePage((), (), (), 0, 12, "x")


def test_row_with_bad_class_number_is_refused_without_a_number() -> None:
    page = read_course_page(answer(row("7127"), row("71271")), TERM, "CSE", "240")
    assert [s.class_nbr for s in page.sections] == ["71271"]
    assert page.unreadable == ()
    assert "class number is not 5 digits: '7127'" in page.refused[0]


def test_row_naming_no_course_is_refused() -> None:
    page = read_course_page(answer(row("71272", SUBJECT=None)), TERM, "CSE", "240")
    assert page.sections == ()
    assert page.unreadable == ("71272",)
    assert "no SUBJECT and CATALOGNBR" in page.refused[0]


@pytest.mark.parametrize(
    "payload",
    [b"<html>maintenance</html>", b'{"classes": [', b"[]", b'"classes"', b'{"error": "nope"}', b"null"],
)
def test_answers_that_are_no_class_search_raise(payload: bytes) -> None:
    with pytest.raises(CatalogFormatError):
        read_course_page(payload, TERM, "CSE", "240")


# Hostile input: only a result or CatalogFormatError may come out.

_CLAS_KEYS = (
    "STRM",
    "CLASSNBR",
    "SUBJECT",
    "CATALOGNBR",
    "ENRLCAP",
    "ENRLTOT",
    "WAITCAP",
    "WAITTOT",
    "INSTRUCTORSLIST",
    "STARTTIME",
    "ENDTIME",
    "DAYLIST",
    "MON",
    "TERMENDDATE",
    "TITLE",
    "CLASSSTAT",
)
_PLAUSIBLE = st.sampled_from(
    [
        "",
        "0",
        "40",
        "-3",
        "9" * 30,
        "²",
        "1e3",
        "4:30 PM",
        "16:30:00",
        "99:99",
        "2026-12-14 00:00:00.0",
        "2026-02-30",
        "CSE",
        " cse ",
        "240",
        "240L",
        "71240",
        "7124",
        TERM,
        "2267",
        "a\x00b",
        "Y",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | _PLAUSIBLE
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_CLAS_KEYS) | st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
_COUNTS = st.integers(min_value=0, max_value=300).map(str) | st.integers(min_value=0, max_value=300)


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, junk otherwise: enough rows get through to reach the section code."""
    return st.one_of(good, good, good, _PLAUSIBLE | _JSON)


_ROW_CORE = {
    "CLASSNBR": _mostly(st.sampled_from(["71240", "71241", "71242"])),
    "SUBJECT": _mostly(st.sampled_from(["CSE", " cse "])),
    "CATALOGNBR": _mostly(st.sampled_from(["240", "24"])),
    "ENRLCAP": _mostly(_COUNTS),
    "ENRLTOT": _mostly(_COUNTS),
}
_ROWS = st.fixed_dictionaries(
    _ROW_CORE,
    optional={key: _PLAUSIBLE | _JSON for key in _CLAS_KEYS if key not in _ROW_CORE}
    | {"STRM": _mostly(st.just(TERM))},
)
_SEAT_INFO = st.dictionaries(st.sampled_from(["ENRL_CAP", "ENRL_TOT"]), _JSON, max_size=2) | _JSON
_ITEMS = (
    st.fixed_dictionaries(
        {"CLAS": _ROWS | _JSON},
        optional={"seatInfo": _SEAT_INFO, "SUBJECTNUMBER": _JSON | _PLAUSIBLE, "SECTIONCLASSNUMBER": _JSON},
    )
    | _JSON
)
_DOCUMENTS = (
    st.fixed_dictionaries(
        {"classes": st.lists(_ITEMS, max_size=6)}, optional={"scrollId": _JSON, "total": _JSON}
    )
    | st.fixed_dictionaries(
        {
            "hits": st.fixed_dictionaries(
                {"hits": st.lists(st.fixed_dictionaries({"_source": _ROWS}) | _JSON)}
            )
        },
        optional={"_scroll_id": _JSON},
    )
    | _JSON
)
_PAYLOADS = _DOCUMENTS.map(lambda document: json.dumps(document).encode()) | st.binary(max_size=64)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_PAYLOADS, subject=st.sampled_from(["CSE", "cse"]), catalog_nbr=st.sampled_from(["240", "24"]))
def test_hostile_answers_never_crash_the_course_reader(
    payload: bytes, subject: str, catalog_nbr: str
) -> None:
    try:
        page = read_course_page(payload, TERM, subject, catalog_nbr)
    except CatalogFormatError:
        return
    numbers = [s.class_nbr for s in page.sections]
    assert len(numbers) == len(set(numbers))
    assert not set(numbers) & set(page.unreadable)
    assert page.rows >= len(page.sections) + len(page.refused)
    assert page.total is None or page.total >= 0
    for section in page.sections:
        assert 0 <= section.open_seats <= MAX_COUNT
        assert 0 <= section.enrl_cap <= MAX_COUNT
        assert 0 <= section.enrl_tot <= MAX_COUNT
        assert section.course.upper() == "CSE " + catalog_nbr
        assert len(section.class_nbr) == 5
        assert section.class_nbr.isascii()
        assert section.class_nbr.isdigit()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_PAYLOADS, class_nbr=st.sampled_from(["71240", "7124"]))
def test_hostile_answers_never_crash_find_section(payload: bytes, class_nbr: str) -> None:
    try:
        section = find_section(payload, TERM, class_nbr)
    except CatalogFormatError:
        return
    if section is not None:
        assert section.class_nbr == class_nbr
        assert 0 <= section.open_seats <= MAX_COUNT
