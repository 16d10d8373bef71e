"""Pure parts of operating PickMyClass: settings, the status screen, dead-letter text, error lines."""

from __future__ import annotations

import asyncpg
import pytest
from nats.errors import NoServersError

from pmc import check, dlq, status
from pmc.cli import parser
from shared.events import DeadLetter
from shared.failures import explain
from shared.settings import SettingsError, load_settings
from shared.streams import Topology
from tests.factories import section_state


def test_health_port_and_stream_replicas_are_read_and_checked() -> None:
    settings = load_settings({"HEALTH_PORT": "9105", "NATS_STREAM_REPLICAS": "3"})
    assert (settings.health_port, settings.nats_stream_replicas) == (9105, 3)
    assert load_settings({}).health_port == 9100
    with pytest.raises(SettingsError, match="HEALTH_PORT must be a TCP port"):
        load_settings({"HEALTH_PORT": "70000"})
    with pytest.raises(SettingsError, match="NATS_STREAM_REPLICAS must be 1, 3 or 5"):
        load_settings({"NATS_STREAM_REPLICAS": "2"})


def test_every_stream_gets_the_configured_replicas() -> None:
    assert {stream.config().num_replicas for stream in Topology("pmc", 300, 3).streams} == {3}
    assert {stream.config().num_replicas for stream in Topology("pmc").streams} == {1}


def test_health_urls_parse_and_refuse_garbage() -> None:
    assert status.parse_health_urls(" scraper=http://a:1/readyz, detector=http://b:2/readyz,") == {
        "scraper": "http://a:1/readyz",
        "detector": "http://b:2/readyz",
    }
    assert status.parse_health_urls("") == {}
    with pytest.raises(ValueError, match="expected name=url"):
        status.parse_health_urls("scraper")


def test_the_status_screen_lists_the_problems_and_ends_with_the_verdict() -> None:
    report = status.Report(
        streams=[status.StreamRow("PMC_CHECKS", 12, 3400), status.StreamRow("PMC_DEAD", None, None)],
        consumers=[status.ConsumerRow("pmc-scraper", "PMC_CHECKS", 10, 2, 0)],
        dead_letters=None,
        checked=5,
        unchecked=1,
        oldest_seconds=4000.0,
        median_seconds=30.0,
        problems=["stream PMC_DEAD is missing: run `python -m shared.setup`"],
    )
    text = status.render(report)
    assert "PMC_CHECKS              12        3,400" in text
    assert "PMC_DEAD           missing      missing" in text
    assert "oldest 66.7 min, median 30 s" in text
    assert "last cycle        none recorded yet" in text
    assert text.endswith("UNHEALTHY:\n  - stream PMC_DEAD is missing: run `python -m shared.setup`")
    assert not report.healthy
    assert status.render(status.Report()).endswith("healthy")


def test_a_dead_letter_is_summarised_on_one_line_and_shown_whole() -> None:
    letter = DeadLetter(
        subject="pmc.change.seat_opened",
        consumer="pmc-notifier",
        deliveries=10,
        error="TransientSendError: resend 503\nretry later " + "x" * 100,
        failed_at=1_800_000_000.0,
        data='{"kind":"seat_opened","change_key":"2271-10310-7"}',
    )
    line = dlq.summary(dlq.Letter(42, letter))
    assert "\n" not in line
    assert line.startswith("      42  2027-01-15 08:00:00  pmc-notifier")
    assert line.endswith("…")
    shown = dlq.detail(dlq.Letter(42, letter))
    assert '"change_key": "2271-10310-7"' in shown
    assert "deliveries  10" in shown


def test_a_section_is_described_for_an_operator() -> None:
    text = check.describe(section_state(enrl_tot=97, instructors=("Grace Hopper",)))
    assert "CSE 310  Data Structures and Algorithms" in text
    assert "3 open of 100 (97 enrolled)" in text
    assert "instructor Grace Hopper" in text
    assert "instructor Staff" in check.describe(section_state())


def test_failures_read_as_one_line_that_says_what_to_do() -> None:
    missing_db = asyncpg.InvalidCatalogNameError('database "pickmyclass" does not exist')
    line = explain(missing_db, database_url="postgresql://u@h:5432/pickmyclass")
    assert line.startswith("database 'pickmyclass' does not exist: run `python -m shared.setup`")
    assert "no NATS server answers" in explain(NoServersError())
    assert explain(ConnectionRefusedError(111, "Connection refused")).startswith("a server did not answer")


def test_the_cli_requires_a_command_and_knows_them_all() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([])
    for argv in (
        ["status", "--json"],
        ["dlq", "list"],
        ["dlq", "show", "7"],
        ["dlq", "replay", "--all"],
        ["check", "--term", "2271", "--class", "10310"],
        ["admin", "promote", "a@b.edu"],
    ):
        assert parser().parse_args(argv).run is not None


def test_sequence_numbers_outside_jetstreams_range_are_refused_by_the_cli() -> None:
    for bad in (["dlq", "show", "0"], ["dlq", "show", "18446744073709551616"], ["dlq", "replay", "x"]):
        with pytest.raises(SystemExit):
            parser().parse_args(bad)
    assert parser().parse_args(["dlq", "show", "18446744073709551615"]).seq == 2**64 - 1
