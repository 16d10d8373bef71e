from __future__ import annotations

import json
from typing import Any

import pytest

from services.scraper.parser import CatalogFormatError, find_section
from shared.events import SectionState
from tests.infra import ASU_CAPTURE

TERM = "2271"


@pytest.fixture(scope="module")
def capture() -> bytes:
    if not ASU_CAPTURE.exists():
        pytest.skip(f"needs ../shared (ASU capture): {ASU_CAPTURE} is missing")
    return ASU_CAPTURE.read_bytes()


def clas(class_nbr: str, **fields: Any) -> dict[str, Any]:
    """A CLAS object in the real refine=Y shape (string-typed), overridable field by field."""
    row: dict[str, Any] = {
        "STRM": TERM,
        "CLASSNBR": class_nbr,
        "CLASSSECTION": "1001",
        "SUBJECT": "MAT",
        "CATALOGNBR": "265",
        "TITLE": "Calculus for Engineers I",
        "COURSETITLELONG": "Calculus for Engineers I",
        "COMPONENTPRIMARY": "LEC",
        "ENRLCAP": "40",
        "ENRLTOT": "40",
        "WAITCAP": "0",
        "WAITTOT": "0",
        "HASACTIVERESERVEDSEATS": "N",
        "INSTRUCTORSLIST": ["Ana Whitfield"],
        "DAYLIST": "T Th",
        "STARTTIME": "10:30 AM",
        "ENDTIME": "11:45 AM",
        "MON": "N",
        "TUES": "Y",
        "WED": "N",
        "THURS": "Y",
        "FRI": "N",
        "SAT": "N",
        "SUN": "N",
        "LOCATION": "TEMPE",
        "INSTRUCTIONMODE": "P",
        "CLASSSTAT": "A",
    }
    row.update(fields)
    return row


def refine(*rows: dict[str, Any], seat_info: bool = True) -> bytes:
    classes = []
    for row in rows:
        item: dict[str, Any] = {"CLAS": row, "SUBJECTNUMBER": f"{row['SUBJECT']} {row['CATALOGNBR']}"}
        if seat_info:
            item["seatInfo"] = {"ENRL_CAP": int(row["ENRLCAP"]), "ENRL_TOT": int(row["ENRLTOT"])}
        classes.append(item)
    return json.dumps({"classes": classes, "scrollId": "abc", "total": {"value": len(classes)}}).encode()


def envelope(*rows: dict[str, Any]) -> bytes:
    hits = [{"_index": "classes", "_id": row["CLASSNBR"], "_source": row} for row in rows]
    return json.dumps({"hits": {"total": {"value": len(hits)}, "hits": hits}}).encode()


def test_captured_lecture_is_read_fully(capture: bytes) -> None:
    state = find_section(capture, "2267", "66445")
    assert state == SectionState(
        term="2267",
        class_nbr="66445",
        subject="CSE",
        catalog_nbr="310",
        title="Data Structures and Algorithms",
        section="1011",
        component="LEC",
        instructors=("Nakul Gopalan",),
        enrl_cap=150,
        enrl_tot=81,
        open_seats=69,
        wait_cap=0,
        wait_tot=0,
        reserved_seats=False,
        days="M W",
        start_time="4:30 PM",
        end_time="5:45 PM",
        location="TEMPE",
        instruction_mode="P",
        class_status="A",
        term_end="2026-12-14",
    )


def test_captured_full_section_with_quoted_instructor(capture: bytes) -> None:
    state = find_section(capture, "2267", "74350")
    assert state is not None
    assert (state.enrl_cap, state.enrl_tot, state.open_seats) == (150, 150, 0)
    assert state.instructors == ("'YZ' Yezhou Yang",)
    assert (state.days, state.start_time, state.end_time) == ("T Th", "1:30 PM", "2:45 PM")


def test_captured_online_section_has_no_times(capture: bytes) -> None:
    state = find_section(capture, "2267", "75092")
    assert state is not None
    assert (state.start_time, state.end_time, state.days) == (None, None, "")
    assert (state.location, state.instruction_mode, state.open_seats) == ("ASUONLINE", "OL", 32)


def test_captured_file_every_row_parses(capture: bytes) -> None:
    class_nbrs = [item["CLAS"]["CLASSNBR"] for item in json.loads(capture)["classes"]]
    states = [find_section(capture, "2267", class_nbr) for class_nbr in class_nbrs]
    assert [state.class_nbr if state else None for state in states] == class_nbrs


def test_other_term_or_number_is_not_found(capture: bytes) -> None:
    assert find_section(capture, "2267", "66446") is None
    assert find_section(capture, "2271", "66445") is None


def test_near_miss_before_the_exact_row_is_skipped() -> None:
    payload = refine(clas("71234", ENRLTOT="10"), clas("71230", ENRLTOT="39"))
    state = find_section(payload, TERM, "71230")
    assert state is not None
    assert (state.class_nbr, state.open_seats) == ("71230", 1)


def test_empty_result_is_not_found() -> None:
    assert find_section(b'{"classes": [], "scrollId": null, "total": {"value": 0}}', TERM, "71230") is None


def test_online_section_with_null_times_and_no_days() -> None:
    row = clas("80001", STARTTIME=None, ENDTIME=None, DAYLIST="", TUES="N", THURS="N", LOCATION="ASUONLINE")
    state = find_section(refine(row | {"INSTRUCTIONMODE": "OL"}), TERM, "80001")
    assert state is not None
    assert (state.start_time, state.end_time, state.days) == (None, None, "")
    assert state.instruction_mode == "OL"


def test_several_instructors_keep_their_order() -> None:
    row = clas("80002", INSTRUCTORSLIST=["Wei Okafor", "'GM' Grace Mehta"])
    state = find_section(refine(row), TERM, "80002")
    assert state is not None
    assert state.instructors == ("Wei Okafor", "'GM' Grace Mehta")


@pytest.mark.parametrize("instructors", [[], None, [""], ["Staff"], ["TBA"]])
def test_no_instructor_is_staff(instructors: list[str] | None) -> None:
    row = clas("80003", INSTRUCTORSLIST=instructors)
    state = find_section(refine(row), TERM, "80003")
    assert state is not None
    assert state.instructors == ()


def test_over_enrolled_section_has_no_open_seats() -> None:
    state = find_section(refine(clas("80004", ENRLCAP="40", ENRLTOT="43")), TERM, "80004")
    assert state is not None
    assert (state.enrl_cap, state.enrl_tot, state.open_seats) == (40, 43, 0)


def test_seat_info_wins_over_strings() -> None:
    payload = json.loads(refine(clas("80005", ENRLCAP="40", ENRLTOT="40")))
    payload["classes"][0]["seatInfo"] = {"ENRL_CAP": 41, "ENRL_TOT": 40}
    state = find_section(json.dumps(payload).encode(), TERM, "80005")
    assert state is not None
    assert state.open_seats == 1


def test_strings_used_without_seat_info_and_details_filled() -> None:
    row = clas(
        "80006",
        ENRLCAP="30",
        ENRLTOT="12",
        WAITCAP="5",
        WAITTOT="2",
        HASACTIVERESERVEDSEATS="Y",
        TITLE="",
        COURSETITLELONG="Applied Linear Algebra",
        CLASSSTAT="X",
    )
    state = find_section(refine(row, seat_info=False), TERM, "80006")
    assert state is not None
    assert (state.enrl_cap, state.enrl_tot, state.open_seats) == (30, 12, 18)
    assert (state.wait_cap, state.wait_tot, state.reserved_seats) == (5, 2, True)
    assert (state.title, state.class_status) == ("Applied Linear Algebra", "X")


def test_days_fall_back_to_flags() -> None:
    row = clas("80007", DAYLIST=None, MON="Y", TUES="N", WED="Y", THURS="N", FRI="Y")
    state = find_section(refine(row), TERM, "80007")
    assert state is not None
    assert state.days == "M W F"


def test_elasticsearch_envelope_with_24_hour_times() -> None:
    row = clas("80008", STARTTIME="09:00:00", ENDTIME="13:15:00", ENRLCAP="25", ENRLTOT="24")
    state = find_section(envelope(clas("80009"), row), TERM, "80008")
    assert state is not None
    assert (state.start_time, state.end_time, state.open_seats) == ("9:00 AM", "1:15 PM", 1)


@pytest.mark.parametrize(
    ("given", "shown"),
    [("00:05:00", "12:05 AM"), ("12:00:00", "12:00 PM"), ("23:59", "11:59 PM"), ("9:00 am", "9:00 AM")],
)
def test_time_forms(given: str, shown: str) -> None:
    state = find_section(refine(clas("80010", STARTTIME=given)), TERM, "80010")
    assert state is not None
    assert state.start_time == shown


def test_row_without_term_matches_on_number() -> None:
    row = clas("80011")
    del row["STRM"]
    state = find_section(envelope(row), TERM, "80011")
    assert state is not None
    assert state.term == TERM


@pytest.mark.parametrize(
    "payload",
    [b"<html>maintenance</html>", b'{"classes": [', b"[]", b'{"error": "nope"}', b'{"classes": [{"x": 1}]}'],
)
def test_unrecognised_answers_raise(payload: bytes) -> None:
    with pytest.raises(CatalogFormatError):
        find_section(payload, TERM, "80012")


@pytest.mark.parametrize(("field", "junk"), [("ENRLCAP", "lots"), ("ENRLTOT", "-3"), ("WAITCAP", [1])])
def test_junk_numbers_raise_with_a_clear_message(field: str, junk: object) -> None:
    row = clas("80013", **{field: junk})
    with pytest.raises(CatalogFormatError, match=r"class 80013 in term 2271: .* not a whole number"):
        find_section(refine(row, seat_info=False), TERM, "80013")


def test_junk_in_other_rows_does_not_matter() -> None:
    payload = refine(clas("80014", ENRLCAP="n/a", ENRLTOT="n/a"), clas("80015"), seat_info=False)
    state = find_section(payload, TERM, "80015")
    assert state is not None
    assert state.open_seats == 0


@pytest.mark.parametrize("cap", ["99999999999", "²", "-3"])
def test_absurd_or_foreign_counts_are_format_errors(cap: str) -> None:
    with pytest.raises(CatalogFormatError):
        find_section(refine(clas("80020", ENRLCAP=cap), seat_info=False), TERM, "80020")


def test_nul_characters_are_dropped_from_text() -> None:
    state = find_section(refine(clas("80021", TITLE="Data\x00 Structures")), TERM, "80021")
    assert state is not None
    assert state.title == "Data Structures"


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("2026-12-14 00:00:00.0", "2026-12-14"),
        ("2026-12-14", "2026-12-14"),
        ("2026-12-14T00:00:00", "2026-12-14"),
        (" 2027-05-08 00:00:00.0 ", "2027-05-08"),
        ("2026-02-30 00:00:00.0", ""),
        ("14/12/2026", ""),
        ("", ""),
        (None, ""),
        (20261214, ""),
    ],
)
def test_term_end_is_read_as_a_date_or_left_empty(given: object, read: str) -> None:
    state = find_section(refine(clas("80022", TERMENDDATE=given)), TERM, "80022")
    assert state is not None
    assert state.term_end == read


def test_term_end_absent_is_empty() -> None:
    state = find_section(envelope(clas("80023")), TERM, "80023")
    assert state is not None
    assert state.term_end == ""


def test_count_with_thousands_of_digits_is_a_format_error_not_a_crash() -> None:
    with pytest.raises(CatalogFormatError, match="not a whole number"):
        find_section(refine(clas("80024", ENRLCAP="9" * 5000), seat_info=False), TERM, "80024")
