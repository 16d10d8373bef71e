"""Pure parts of the gateway: validation, passwords, the CSRF rule, terms, section views, the live hub."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from services.gateway.auth import Credentials, validate_credentials
from services.gateway.csrf import is_json, needs_json
from services.gateway.live import LiveHub
from services.gateway.pages import upcoming_terms
from services.gateway.passwords import hash_password, verify_password
from services.gateway.sections import live_event
from services.gateway.sessions import session_cookie
from services.gateway.watches import NewWatch, validate_watch
from shared.events import SectionLive, SectionState, WatchesChanged, encode
from shared.settings import Settings
from shared.streams import Topology

TOPOLOGY = Topology("unit", 60)


def test_passwords_verify_only_themselves_and_are_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "not-a-hash")


@pytest.mark.parametrize(
    ("email", "password", "problem"),
    [
        ("sparky@asu.edu", "12345678", None),
        ("  sparky@asu.edu ", "12345678", None),
        ("", "12345678", "email is required"),
        ("sparky@asu", "12345678", "email must look like name@example.edu"),
        ("spa rky@asu.edu", "12345678", "email must look like name@example.edu"),
        ("sparky@asu.edu", "1234567", "password must be at least 8 characters"),
    ],
)
def test_credentials_validation(email: str, password: str, problem: str | None) -> None:
    assert validate_credentials(Credentials(email=email, password=password)) == problem


@pytest.mark.parametrize(
    ("term", "class_nbr", "problem"),
    [
        ("2267", "66445", None),
        (" 2271 ", "01234", None),
        ("2265", "66445", "term must be an ASU term code like 2267 (Fall 2026)"),
        ("2267", "664451", "class number must be 5 digits"),
    ],
)
def test_watch_validation(term: str, class_nbr: str, problem: str | None) -> None:
    assert validate_watch(NewWatch(term=term, class_nbr=class_nbr)) == problem


@pytest.mark.parametrize(
    ("method", "path", "has_body", "expected"),
    [
        ("POST", "/api/v1/watches", False, True),
        ("PATCH", "/api/v1/x", False, True),
        ("DELETE", "/api/v1/watches/1", False, False),
        ("DELETE", "/api/v1/watches/1", True, True),
        ("GET", "/api/v1/watches", False, False),
        ("POST", "/unsubscribe", True, False),
    ],
)
def test_which_requests_must_be_json(method: str, path: str, has_body: bool, expected: bool) -> None:
    assert needs_json(method, path, has_body) is expected


def test_json_content_type_allows_parameters() -> None:
    assert is_json("application/json; charset=utf-8")
    assert not is_json("text/plain")
    assert not is_json("application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    ("today", "codes"),
    [
        (date(2026, 1, 10), ["2261", "2264", "2267"]),
        (date(2026, 6, 1), ["2264", "2267", "2271"]),
        (date(2026, 11, 24), ["2267", "2271", "2274"]),
    ],
)
def test_upcoming_terms(today: date, codes: list[str]) -> None:
    terms = upcoming_terms(today)
    assert [term.code for term in terms] == codes
    assert terms[0].label.endswith(str(today.year))


def _live(class_nbr: str, *, found: bool = True) -> SectionLive:
    state = SectionState(
        term="2267",
        class_nbr=class_nbr,
        subject="CSE",
        catalog_nbr="310",
        title="DSA",
        instructors=("TBA",),
        enrl_cap=10,
        enrl_tot=10,
        open_seats=0,
    )
    return SectionLive(
        checked_at=0.0, state=state if found else None, term="2267", class_nbr=class_nbr, found=found
    )


def test_live_event_shape() -> None:
    event = live_event(_live("66445"))
    assert event.checked_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert event.section is not None
    assert event.section.instructor_links == []
    assert event.section.instructor_label == "TBA"
    assert live_event(_live("66445", found=False)).section is None


def test_hub_routes_sections_to_watchers_and_user_changes_to_the_user() -> None:
    hub = LiveHub(TOPOLOGY)
    watcher = hub.open(1, frozenset({("2267", "66445")}))
    other = hub.open(2, frozenset({("2267", "70000")}))
    hub.dispatch(TOPOLOGY.live_section_subject("2267", "66445"), encode(_live("66445")))
    hub.dispatch(TOPOLOGY.live_user_subject(2), encode(WatchesChanged(user_id=2)))

    kind, payload = watcher.queue.get_nowait()
    assert kind == "section"
    assert json.loads(payload)["class_nbr"] == "66445"
    assert watcher.queue.empty()
    assert other.queue.get_nowait()[0] == "watches"
    assert other.queue.empty()


def test_hub_follows_changed_sections_and_forgets_closed_streams() -> None:
    hub = LiveHub(TOPOLOGY)
    stream = hub.open(1, frozenset({("2267", "66445")}))
    hub.set_sections(stream, frozenset({("2267", "70000")}))
    hub.dispatch(TOPOLOGY.live_section_subject("2267", "66445"), encode(_live("66445")))
    assert stream.queue.empty()
    hub.close(stream)
    hub.dispatch(TOPOLOGY.live_section_subject("2267", "70000"), encode(_live("70000")))
    assert stream.queue.empty()
    assert hub.stream_count == 0


def test_hub_closes_a_stream_that_falls_behind() -> None:
    hub = LiveHub(TOPOLOGY, queue_size=2)
    stream = hub.open(1, frozenset({("2267", "66445")}))
    for _ in range(3):
        hub.dispatch(TOPOLOGY.live_section_subject("2267", "66445"), encode(_live("66445")))
    assert stream.queue.get_nowait()[0] == "close"
    assert stream.queue.empty()
    assert hub.stream_count == 0


def test_hub_drops_garbage() -> None:
    hub = LiveHub(TOPOLOGY)
    stream = hub.open(1, frozenset({("2267", "66445")}))
    hub.dispatch(TOPOLOGY.live_section_subject("2267", "66445"), b"{not json")
    hub.dispatch(TOPOLOGY.live_user_subject(1), b'{"v": 99, "user_id": 1}')
    assert stream.queue.empty()


def test_session_cookie_is_http_only_lax_and_secure_behind_https() -> None:
    cookie = session_cookie(Settings(site_url="https://pickmyclass.app"), "abc")
    assert (cookie.httponly, cookie.samesite, cookie.secure) == (True, "lax", True)
    assert session_cookie(Settings(site_url="http://localhost:8000"), "abc").secure is False
