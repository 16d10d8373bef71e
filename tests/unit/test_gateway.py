"""Pure parts of the gateway: validation, passwords, the CSRF rule, terms, section views, the live hub,
sessions, security headers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from datetime import UTC, date, datetime

import pytest
from argon2 import PasswordHasher

from services.gateway import passwords
from services.gateway.auth import Credentials, validate_credentials
from services.gateway.csrf import declared_too_large, is_json, needs_json
from services.gateway.live import LiveHub, revoke_subject
from services.gateway.passwords import hash_password, needs_rehash, verify_password
from services.gateway.sections import live_event
from services.gateway.security import headers_for
from services.gateway.sessions import MAX_SESSION_SECONDS, parse_session, session_cookie
from services.gateway.terms import upcoming_terms
from services.gateway.watches import NewWatch, validate_watch
from shared.events import SectionLive, SectionState, WatchesChanged, encode
from shared.settings import Settings
from shared.streams import Topology

TOPOLOGY = Topology("unit", 60)


def test_passwords_verify_only_themselves_and_are_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "not-a-hash")
    assert not needs_rehash(first)


def _scrypt_hash(password: str) -> str:
    salt = b"salt-of-16-bytes"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_old_hashes_still_verify_and_ask_to_be_replaced() -> None:
    legacy = _scrypt_hash("correct horse")
    assert verify_password("correct horse", legacy)
    assert not verify_password("correct horsE", legacy)
    assert needs_rehash(legacy)
    cheaper = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("correct horse")
    assert verify_password("correct horse", cheaper)
    assert needs_rehash(cheaper)


async def test_hashing_runs_a_bounded_number_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def slow_verify(password: str, stored: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return True

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    assert all(await asyncio.gather(*(passwords.verify_async("p", "h") for _ in range(20))))
    assert peak == passwords.CONCURRENT_HASHES


async def test_too_many_waiting_hashes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def blocked(password: str, stored: str) -> bool:
        return release.wait(5)

    monkeypatch.setattr(passwords, "verify_password", blocked)
    limit = passwords.CONCURRENT_HASHES + passwords.MAX_WAITING
    waiting = [asyncio.ensure_future(passwords.verify_async("p", "h")) for _ in range(limit)]
    await asyncio.sleep(0)
    with pytest.raises(passwords.HashingBusy):
        await passwords.verify_async("p", "h")
    release.set()
    assert all(await asyncio.gather(*waiting))


@pytest.mark.parametrize(
    ("email", "password", "problem"),
    [
        ("sparky@asu.edu", "12345678", None),
        ("  sparky@asu.edu ", "12345678", None),
        ("", "12345678", "email is required"),
        ("sparky@asu", "12345678", "email must look like name@example.edu"),
        ("spa rky@asu.edu", "12345678", "email must look like name@example.edu"),
        ("sparky@asu.edu", "1234567", "password must be at least 8 characters"),
        ("sparky@asu.edu", "1234\x005678", "password must not contain control characters"),
        ("sparky@asu.edu", "tab\there!", "password must not contain control characters"),
        ("sparky@asu.edu", "pässwörd with spaces", None),
        ("v\u0130cki@asu.edu", "12345678", "email must look like name@example.edu"),
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


def test_bodies_announced_too_large_are_refused_up_front() -> None:
    assert declared_too_large("16385", 16 * 1024)
    assert not declared_too_large("16384", 16 * 1024)
    assert not declared_too_large("", 16 * 1024)
    assert not declared_too_large("99999999", None)


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


def test_session_cookie_is_http_only_lax_and_host_prefixed_and_secure_behind_https() -> None:
    cookie = session_cookie(Settings(site_url="https://pickmyclass.app"), "abc")
    assert (cookie.key, cookie.httponly, cookie.samesite, cookie.secure) == (
        "__Host-pmc_session",
        True,
        "lax",
        True,
    )
    assert (cookie.path, cookie.domain) == ("/", None)
    plain = session_cookie(Settings(site_url="http://localhost:8000"), "abc")
    assert (plain.key, plain.secure) == ("pmc_session", False)


def test_hub_ends_revoked_streams_by_session_user_or_stream() -> None:
    hub = LiveHub(TOPOLOGY)
    laptop = hub.open(1, frozenset(), session="s1")
    phone = hub.open(1, frozenset(), session="s2")
    other = hub.open(2, frozenset(), session="s3")
    hub.dispatch(revoke_subject(TOPOLOGY, "session", "s1"), b"")
    assert laptop.queue.get_nowait()[0] == "close"
    assert phone.queue.empty()
    hub.dispatch(revoke_subject(TOPOLOGY, "stream", phone.stream_id), b"")
    assert phone.queue.get_nowait()[0] == "close"
    hub.dispatch(revoke_subject(TOPOLOGY, "user", "2"), b"")
    assert other.queue.get_nowait()[0] == "close"
    assert hub.stream_count == 0
    hub.dispatch(revoke_subject(TOPOLOGY, "user", "not-a-number"), b"")


def test_a_session_lives_30_days_from_log_in_at_most() -> None:
    now = 2_000_000_000.0
    assert parse_session(b"7:" + str(int(now) - 3600).encode(), now) == 7
    assert parse_session(f"7:{int(now) - MAX_SESSION_SECONDS}".encode(), now) is None
    with pytest.raises(ValueError, match="not enough values"):
        parse_session(b"7", now)


def test_security_headers() -> None:
    api = headers_for("/api/v1/watches", hsts=False)
    assert api["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in api
    policy = api["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy
    page = headers_for("/", hsts=True)
    assert "Cache-Control" not in page
    assert page["Strict-Transport-Security"].startswith("max-age=")
    assert page["Referrer-Policy"] == "no-referrer"
    assert page["X-Content-Type-Options"] == "nosniff"
