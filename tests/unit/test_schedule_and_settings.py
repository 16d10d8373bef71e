from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.due import check_messages, seconds_until_next_window
from services.scheduler.sections import WatchedSection
from shared.events import CheckCourse, CheckSection, decode
from shared.settings import SettingsError, load_settings
from shared.streams import Topology
from shared.tokens import InvalidToken, sign, verify


def unseen(term: str, class_nbr: str) -> WatchedSection:
    return WatchedSection(term, class_nbr, None, None)


def test_check_messages_name_section_and_window() -> None:
    topology = Topology("pmc", 300)
    first = check_messages(topology, [unseen("2271", "12345"), unseen("2271", "54321")], 7, 2100.0)
    again = check_messages(topology, [unseen("2271", "12345"), unseen("2271", "54321")], 7, 2150.0)
    assert [m.msg_id for m in first] == [m.msg_id for m in again]
    assert len({m.msg_id for m in first}) == 2
    assert decode(first[0].payload, CheckSection).window == 7


def test_sections_seen_before_are_checked_once_per_course() -> None:
    topology = Topology("pmc", 300)
    sections = [
        WatchedSection("2271", "10001", "CSE", "310"),
        WatchedSection("2271", "10002", "CSE", "310"),
        WatchedSection("2271", "10003", "CSE", "310"),
        WatchedSection("2271", "20001", "MAT", "265"),
        # The same course number in another term is another course.
        WatchedSection("2267", "30001", "CSE", "310"),
        unseen("2271", "40001"),
    ]
    messages = check_messages(topology, sections, 7, 2100.0)
    courses = [decode(m.payload, CheckCourse) for m in messages if m.subject == topology.check_course_subject]
    lookups = [decode(m.payload, CheckSection) for m in messages if m.subject == topology.check_subject]
    assert [(c.term, c.subject, c.catalog_nbr, c.class_nbrs) for c in courses] == [
        ("2267", "CSE", "310", ("30001",)),
        ("2271", "CSE", "310", ("10001", "10002", "10003")),
        ("2271", "MAT", "265", ("20001",)),
    ]
    assert [(c.term, c.class_nbr) for c in lookups] == [("2271", "40001")]
    assert len({m.msg_id for m in messages}) == 4
    # Another replica planning the same window names every check the same way.
    assert [m.msg_id for m in check_messages(topology, list(reversed(sections)), 7, 2160.0)] == [
        m.msg_id for m in messages
    ]


def test_next_window_is_aligned_to_the_interval() -> None:
    assert seconds_until_next_window(1000.0, 300) == pytest.approx(200.0)
    assert seconds_until_next_window(1200.0, 300) == pytest.approx(300.0)


def test_settings_from_environment_and_clear_errors() -> None:
    settings = load_settings(
        {"CHECK_INTERVAL_SECONDS": "30", "GATEWAY_PORT": "9000", "RESEND_API_KEY": "re_x"}
    )
    assert (settings.check_interval_seconds, settings.site_url, settings.email_backend) == (
        30,
        "http://localhost:9000",
        "resend",
    )
    assert "re_x" not in repr(settings)
    with_password = load_settings(
        {"DATABASE_URL": "postgresql://app:hunter2@db:5432/pmc", "SECRET_KEY": "s" * 20}
    )
    assert "hunter2" not in repr(with_password)
    assert "s" * 20 not in repr(with_password)
    assert "postgresql://app:***@db:5432/pmc" in repr(with_password)
    with pytest.raises(SettingsError, match="CHECK_INTERVAL_SECONDS"):
        load_settings({"CHECK_INTERVAL_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="RESEND_API_KEY"):
        load_settings({"EMAIL_BACKEND": "resend"})
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings({"SECRET_KEY": "short"}).require_secret_key()


def test_tokens_verify_only_their_purpose_until_expiry() -> None:
    token = sign("k" * 32, "unsubscribe", "42", 60, now=1000.0)
    assert verify("k" * 32, "unsubscribe", token, now=1030.0) == "42"
    for secret, purpose, now in (
        ("x" * 32, "unsubscribe", 1030.0),
        ("k" * 32, "reset", 1030.0),
        ("k" * 32, "unsubscribe", 1061.0),
    ):
        with pytest.raises(InvalidToken):
            verify(secret, purpose, token, now=now)
    with pytest.raises(InvalidToken):
        verify("k" * 32, "unsubscribe", "garbage")


@given(st.integers(min_value=1, max_value=7 * 24 * 3600))
def test_every_stream_accepts_its_dedup_window_for_any_interval(interval: int) -> None:
    for stream in Topology("pmc", interval).streams:
        assert stream.duplicate_window <= stream.max_age, stream.name
    assert Topology("pmc", interval).streams[0].duplicate_window > interval


def test_a_token_with_foreign_characters_is_invalid_not_an_error() -> None:
    with pytest.raises(InvalidToken):
        verify("k" * 32, "unsubscribe", "YQ.1.é")
