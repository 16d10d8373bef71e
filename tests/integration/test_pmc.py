"""The operator CLI against real servers: what an operator types, what they read, the exit code."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext

from devtools import catalog_sim
from pmc.cli import main
from services.notifier.backends import OutboxBackend
from services.notifier.handlers import Notifier
from shared.delivery import Settler
from shared.events import encode
from shared.settings import Settings
from shared.streams import Topology
from tests.factories import change
from tests.integration.test_notifier import add_watcher, outbox
from tests.jetstream import fetch

Pmc = Callable[..., Coroutine[Any, Any, "Result"]]


class Result(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def pmc(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Pmc:
    """`pmc ARGS...` with the environment of this test's system, as an operator's shell would have it."""
    for name in ("nats_url", "database_url", "redis_url", "namespace", "secret_key"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    monkeypatch.setenv("CHECK_INTERVAL_SECONDS", str(settings.check_interval_seconds))

    def run_captured(argv: list[str]) -> Result:
        # Not capsys: the services' loggers, cached on first use, would keep writing to its closed streams.
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return Result(code, out.getvalue(), err.getvalue())

    async def run(*argv: str) -> Result:
        return await asyncio.to_thread(run_captured, list(argv))

    return run


async def dead_change(js: JetStreamContext, topology: Topology, key: str) -> None:
    """A seat change that reached the dead-letter stream the way a failing notifier sends it there."""
    await js.publish(topology.change_subject("seat_opened"), encode(change("seat_opened", key, enrl_tot=99)))
    [msg] = await fetch(js, topology.notifier)
    await Settler(js, topology, topology.notifier).dead_letter(msg, "TransientSendError: provider down")


async def test_status_describes_the_system_and_fails_when_something_needs_an_operator(
    pmc: Pmc, db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    healthy = await pmc("status")
    assert healthy.code == 0, healthy.err
    for name in (topology.checks_stream, topology.dead_stream, topology.scraper.durable, "freshness"):
        assert name in healthy.out
    assert healthy.out.rstrip().endswith("healthy")

    await dead_change(js, topology, "k-status")
    await js.delete_consumer(topology.detector.stream, topology.detector.durable)
    unhealthy = await pmc("status")
    assert unhealthy.code == 1
    assert "1 dead letters: see `pmc dlq list`" in unhealthy.out
    assert f"consumer {topology.detector.durable} is missing" in unhealthy.out

    as_json = await pmc("status", "--json")
    assert as_json.code == 1
    assert '"dead_letters": 1' in as_json.out


async def test_dead_letters_are_listed_shown_and_replayed_and_a_second_replay_sends_nothing_more(
    pmc: Pmc, db: asyncpg.Pool, js: JetStreamContext, topology: Topology, settings: Settings
) -> None:
    await add_watcher(db, "ada@example.edu", class_nbr="12345")
    await dead_change(js, topology, "k-replay")
    seq = (await js.stream_info(topology.dead_stream)).state.last_seq

    listed = await pmc("dlq", "list")
    assert listed.code == 0
    assert str(seq) in listed.out
    assert "provider down" in listed.out
    assert "1 dead letters" in listed.out
    shown = await pmc("dlq", "show", str(seq))
    assert '"change_key": "k-replay"' in shown.out
    assert topology.change_subject("seat_opened") in shown.out

    # Replayed twice (kept the first time, as an operator unsure it worked might do).
    assert (await pmc("dlq", "replay", str(seq), "--keep")).code == 0
    second = await pmc("dlq", "replay", str(seq))
    assert second.code == 0
    assert f"replayed dead letter {seq}" in second.out
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0

    notifier = Notifier(db, OutboxBackend(db), js, topology, topology.notifier, settings)
    replayed = await fetch(js, topology.notifier, count=2)
    await notifier.handle(replayed)
    assert await outbox(db) == ["ada@example.edu"]

    missing = await pmc("dlq", "show", str(seq))
    assert missing.code == 2
    assert missing.err.strip() == f"pmc: no dead letter with sequence {seq} in {topology.dead_stream}"


async def test_replay_all_reports_progress(pmc: Pmc, js: JetStreamContext, topology: Topology) -> None:
    for key in ("k1", "k2", "k3"):
        await dead_change(js, topology, key)
    replayed = await pmc("dlq", "replay", "--all")
    assert replayed.code == 0
    assert "replayed 3/3" in replayed.err
    assert "replayed 3 dead letters" in replayed.out
    assert (await js.stream_info(topology.dead_stream)).state.messages == 0
    nothing = await pmc("dlq", "replay")
    assert (nothing.code, nothing.err.strip()) == (
        2,
        "pmc: name the letters to replay (SEQ ...) or say --all",
    )


async def test_check_looks_a_section_up_through_the_scrapers_code(
    pmc: Pmc, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with catalog_sim.serve() as api_url:
        monkeypatch.setenv("ASU_API_URL", api_url)
        section = {
            "term": "2271",
            "class_nbr": "10310",
            "subject": "CHM",
            "catalog_nbr": "113",
            "title": "General Chemistry I",
            "enrl_cap": 100,
            "enrl_tot": 97,
            "instructors": ["Grace Hopper"],
        }
        async with httpx.AsyncClient(base_url=api_url.split(catalog_sim.API_PREFIX)[0]) as sim:
            (await sim.post("/_sim/sections", json=section)).raise_for_status()
        found = await pmc("check", "--term", "2271", "--class", "10310")
        assert found.code == 0, found.err
        assert "CHM 113  General Chemistry I" in found.out
        assert "3 open of 100 (97 enrolled)" in found.out
        assert "Grace Hopper" in found.out
        as_json = await pmc("check", "--term", "2271", "--class", "10310", "--json")
        assert '"open_seats": 3' in as_json.out
        absent = await pmc("check", "--term", "2271", "--class", "99999")
        assert absent.code == 1
        assert "not in the class search" in absent.out
    bad = await pmc("check", "--term", "fall", "--class", "10310")
    assert (bad.code, bad.err.strip()) == (
        2,
        "pmc: --term must be an ASU term code like 2271 (Spring 2027), got 'fall'",
    )


async def test_admin_promote_and_demote(pmc: Pmc, db: asyncpg.Pool) -> None:
    await db.execute("INSERT INTO app_user (email, password_hash) VALUES ('Boss@Example.edu', 'x')")
    promoted = await pmc("admin", "promote", "boss@example.edu")
    assert (promoted.code, promoted.out.strip()) == (0, "Boss@Example.edu is now an admin")
    assert await db.fetchval("SELECT is_admin FROM app_user") is True
    assert (await pmc("admin", "demote", "boss@example.edu")).code == 0
    assert await db.fetchval("SELECT is_admin FROM app_user") is False
    nobody = await pmc("admin", "promote", "nobody@example.edu")
    assert (nobody.code, nobody.err.strip()) == (2, "pmc: no account with email 'nobody@example.edu'")


async def test_unreachable_servers_are_one_line_not_a_traceback(
    pmc: Pmc, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{closed_port}")
    result = await pmc("status")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert result.err.startswith("pmc: ")
    assert "Traceback" not in result.err
