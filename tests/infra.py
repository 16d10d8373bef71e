"""Where the tests find real NATS JetStream, PostgreSQL and Redis.

Order: TEST_NATS_URL / TEST_DATABASE_URL / TEST_REDIS_URL if set; else the standard local ports; else,
where a Docker engine answers, testcontainers. Otherwise the run fails and says what is missing: these
tests never skip because a server is absent.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from devtools.net import answers

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


def find_servers(stack: ExitStack) -> Servers:
    urls: dict[str, str] = {}
    missing: list[str] = []
    for kind, (variable, default) in _DEFAULTS.items():
        url = os.environ.get(variable, default)
        if answers(url):
            urls[kind] = url
        elif variable not in os.environ and _docker_answers():
            urls[kind] = _from_container(kind, stack)
        else:
            missing.append(f"{kind} is not reachable at {url} (start it, or set {variable})")
    if missing:
        raise RuntimeError("integration tests need real servers: " + "; ".join(missing))
    return Servers(nats_url=urls["nats"], database_url=urls["postgres"], redis_url=urls["redis"])
