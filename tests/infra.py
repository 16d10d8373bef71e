"""Where the tests find real NATS JetStream, PostgreSQL and Redis.

Order, per server: TEST_NATS_URL / TEST_DATABASE_URL / TEST_REDIS_URL if set (and then it must answer);
else the standard local port; else, where a Docker engine answers, testcontainers; else the embedded
servers of the dev extra (nats-server, PostgreSQL, Valkey from PyPI wheels), started on free ports for this
test session and stopped at its end. `TEST_EMBEDDED=1` uses the embedded ones for all three. A server that
cannot be had fails the run and says why: these tests never skip because a server is absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from devtools.embedded import EmbeddedError, EmbeddedStack
from devtools.net import answers, free_port
from shared.db import with_database

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared"
ASU_CAPTURE = SHARED_REFERENCE / "asu" / "classes_cse310_2267.json"


@dataclass(frozen=True)
class Servers:
    nats_url: str
    database_url: str
    redis_url: str


_DEFAULTS = {
    "nats": ("TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "postgres": ("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "redis": ("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        return bool(docker.from_env().ping())
    except Exception:
        return False


def _from_container(kind: str, stack: ExitStack) -> str:
    if kind == "nats":
        from testcontainers.nats import NatsContainer

        nats_container = stack.enter_context(NatsContainer(jetstream=True))
        return str(nats_container.nats_uri())
    if kind == "postgres":
        from testcontainers.postgres import PostgresContainer

        pg = stack.enter_context(PostgresContainer("postgres:16-alpine"))
        return str(pg.get_connection_url(driver=None))
    from testcontainers.redis import RedisContainer

    redis_container = stack.enter_context(RedisContainer())
    host = redis_container.get_container_host_ip()
    return f"redis://{host}:{redis_container.get_exposed_port(6379)}/0"


def _embedded(kinds: list[str], stack: ExitStack, say: Callable[[str], None]) -> dict[str, str]:
    data = Path(tempfile.mkdtemp(prefix="pmc-test-servers-"))
    stack.callback(shutil.rmtree, data, ignore_errors=True)
    say(f"starting embedded {', '.join(kinds)} for this test session (data in {data})")
    embedded = EmbeddedStack(
        data,
        nats_port=free_port(),
        nats_monitor_port=free_port(),
        postgres_port=free_port(),
        redis_port=free_port(),
        components=kinds,
    )
    try:
        servers = stack.enter_context(embedded)
    except EmbeddedError as exc:
        raise RuntimeError(
            f"no {', '.join(kinds)} answering, and the embedded ones did not start: {exc}"
        ) from None
    by_kind = {
        "nats": servers.nats_url,
        # The embedded cluster's maintenance database; each test session creates its own database.
        "postgres": with_database(servers.database_url, "postgres"),
        "redis": servers.redis_url,
    }
    return {kind: by_kind[kind] for kind in kinds}


def find_servers(stack: ExitStack, say: Callable[[str], None] = print) -> Servers:
    urls: dict[str, str] = {}
    missing: list[str] = []
    embed: list[str] = []
    forced = os.environ.get("TEST_EMBEDDED") == "1"
    for kind, (variable, default) in _DEFAULTS.items():
        url = os.environ.get(variable, default)
        if forced:
            embed.append(kind)
        elif answers(url):
            urls[kind] = url
        elif variable in os.environ:
            missing.append(f"{kind} is not reachable at {url} (start it, or unset {variable})")
        elif _docker_answers():
            urls[kind] = _from_container(kind, stack)
        else:
            embed.append(kind)
    if missing:
        raise RuntimeError("integration tests need real servers: " + "; ".join(missing))
    if embed:
        urls.update(_embedded(embed, stack, say))
    return Servers(nats_url=urls["nats"], database_url=urls["postgres"], redis_url=urls["redis"])
