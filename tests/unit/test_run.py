from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from devtools.run import LOCAL_DEFAULTS, choose_servers


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


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
