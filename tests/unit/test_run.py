from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devtools import prepare_tests, run
from devtools.run import LOCAL_DEFAULTS, choose_servers


def test_embedded_is_forced_by_pmc_embedded_even_when_urls_are_set() -> None:
    chosen, embed = choose_servers({"PMC_EMBEDDED": "1", "NATS_URL": "nats://example:4222"})
    assert (chosen, embed) == ({}, list(LOCAL_DEFAULTS))


def test_configured_urls_win_and_nothing_is_embedded_for_them(closed_port: int) -> None:
    env = {
        "NATS_URL": f"nats://127.0.0.1:{closed_port}",
        "DATABASE_URL": f"postgresql://u@127.0.0.1:{closed_port}/db",
        "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
    }
    chosen, embed = choose_servers(env)
    assert (chosen, embed) == (env, [])


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(run, "DATA", tmp_path)
    monkeypatch.setattr(run, "ENV_FILE", tmp_path / "env")
    monkeypatch.setattr(run, "LOCK_FILE", tmp_path / "run.lock")
    return tmp_path


def test_the_environment_is_written_for_a_shell_privately_and_quoted(data: Path) -> None:
    env = run.build_env({"NATS_URL": "nats://127.0.0.1:14222"}, None)
    env.update(SECRET_KEY="s3cret with 'quotes'", DATABASE_URL="postgresql://a@b/c", REDIS_URL="redis://r")
    run.write_env_file(env)
    text = (data / "env").read_text()
    assert (data / "env").stat().st_mode & 0o777 == 0o600
    assert "export NATS_URL=nats://127.0.0.1:14222\n" in text
    assert "export EMAIL_BACKEND=outbox\n" in text
    assert "export HEALTH_URLS=scheduler=http://127.0.0.1:9101/readyz," in text
    sourced = subprocess.run(
        ["bash", "-c", f'source {data / "env"} && printf %s "$SECRET_KEY"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == "s3cret with 'quotes'"


def test_a_second_run_in_the_same_checkout_is_refused_with_where_the_first_is(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run.hold_lock()
    assert first is not None
    try:
        first.write(", http://localhost:8000")
        first.flush()
        assert run.hold_lock() is None
        said = capsys.readouterr().out
        assert f"already running here (pid {os.getpid()}, http://localhost:8000)" in said
    finally:
        first.close()
    again = run.hold_lock()
    assert again is not None
    again.close()


def test_chromium_is_found_where_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    monkeypatch.setenv("CHROMIUM_PATH", str(browser))
    assert prepare_tests.chromium() == browser
