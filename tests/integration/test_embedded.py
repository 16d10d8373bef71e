"""The embedded servers `make run` starts on a bare machine: real binaries, real clients, real restarts."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
import redis.asyncio as redis

from devtools.embedded import EmbeddedError, EmbeddedServers, EmbeddedStack
from shared.db import with_database

pytestmark = pytest.mark.integration

STREAM = "EMBEDDED_TEST"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: pytest's base temp dir is mode 0700, which the unprivileged user PostgreSQL runs as
    # (when the tests run as root) could not enter.
    path = Path(tempfile.mkdtemp(prefix="pmc-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_ports(count: int) -> list[int]:
    # All held open together so the kernel hands out distinct ports.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def make_stack(data_dir: Path, ports: list[int]) -> EmbeddedStack:
    nats_port, monitor_port, postgres_port, redis_port = ports
    return EmbeddedStack(
        data_dir,
        nats_port=nats_port,
        nats_monitor_port=monitor_port,
        postgres_port=postgres_port,
        redis_port=redis_port,
    )


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def admin_url(servers: EmbeddedServers) -> str:
    return with_database(servers.database_url, "postgres")


def report(run: str, stack: EmbeddedStack) -> None:
    times = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in stack.startup_seconds.items())
    print(f"\nembedded start-up ({run}): {times}")


async def test_servers_accept_real_clients_and_keep_data_across_restarts(data_dir: Path) -> None:
    ports = free_ports(4)
    stack = make_stack(data_dir, ports)
    with stack as servers:
        report("first run, includes initdb", stack)
        assert servers.nats_monitor_url == f"http://127.0.0.1:{ports[1]}"
        assert servers.database_url.endswith("/pickmyclass")

        nc = await nats.connect(servers.nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name=STREAM, subjects=["embedded.>"])
            ack = await js.publish("embedded.hello", b"survives restarts")
            stored = await js.get_msg(STREAM, ack.seq)
            assert stored.data == b"survives restarts"
        finally:
            await nc.close()

        conn = await asyncpg.connect(admin_url(servers))
        try:
            version = await conn.fetchval("SELECT version()")
            assert version.startswith("PostgreSQL 18"), version
            await conn.execute("CREATE TABLE kept (note text)")
            await conn.execute("INSERT INTO kept VALUES ('survives restarts')")
        finally:
            await conn.close()

        client = redis.Redis.from_url(servers.redis_url)
        try:
            assert await client.ping()
            await client.set("embedded:kept", b"survives restarts")
            assert await client.get("embedded:kept") == b"survives restarts"
        finally:
            await client.aclose()

        pids = stack.pids
        assert set(pids) == {"nats", "postgres", "redis"}

    assert not any(accepts(port) for port in ports)
    # Each server leads its own process group; an empty group means no PostgreSQL backend lingers either.
    assert not any(group_alive(pid) for pid in pids.values())
    stack.stop()

    again = make_stack(data_dir, ports)
    with again as servers:
        report("restart on the same data", again)
        assert "initdb" not in again.startup_seconds

        nc = await nats.connect(servers.nats_url)
        try:
            stored = await nc.jetstream().get_msg(STREAM, ack.seq)
            assert stored.data == b"survives restarts"
        finally:
            await nc.close()

        conn = await asyncpg.connect(admin_url(servers))
        try:
            assert await conn.fetchval("SELECT note FROM kept") == "survives restarts"
        finally:
            await conn.close()

        client = redis.Redis.from_url(servers.redis_url)
        try:
            assert await client.get("embedded:kept") == b"survives restarts"
        finally:
            await client.aclose()


def test_only_selected_components_start(data_dir: Path) -> None:
    nats_port, monitor_port, postgres_port, redis_port = free_ports(4)
    stack = EmbeddedStack(
        data_dir,
        nats_port=nats_port,
        nats_monitor_port=monitor_port,
        postgres_port=postgres_port,
        redis_port=redis_port,
        components=["redis"],
    )
    with stack as servers:
        assert servers == EmbeddedServers(
            nats_url="", database_url="", redis_url=f"redis://127.0.0.1:{redis_port}/0", nats_monitor_url=""
        )
        assert accepts(redis_port)
        assert not accepts(nats_port)
        assert not accepts(postgres_port)
    assert not accepts(redis_port)


def test_taken_port_fails_fast_and_names_the_port(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = EmbeddedStack(data_dir, postgres_port=port, components=["postgres"])
        with pytest.raises(EmbeddedError, match=rf"port {port} .*postgres.*--postgres-port"):
            stack.start()
    assert stack.pids == {}


def private_folder() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pmc-private-"))
    assert path.stat().st_mode & 0o777 == 0o700
    return path


async def test_root_in_a_private_folder_keeps_postgres_data_where_its_user_can_reach_it() -> None:
    """`PMC_EMBEDDED=1 make run` as root in a `mktemp -d` clone: PostgreSQL's unprivileged user cannot
    enter the checkout, so its data lives in a folder of the checkout's own outside it, across restarts."""
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user")
    private = private_folder()
    stack = make_stack(private / "embedded", free_ports(4))
    try:
        for _ in range(2):
            with stack as servers:
                conn = await asyncpg.connect(admin_url(servers))
                try:
                    await conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
                    await conn.execute("INSERT INTO kept VALUES (1)")
                    kept = await conn.fetchval("SELECT count(*) FROM kept")
                finally:
                    await conn.close()
        assert kept == 2
        outside = (private / "embedded" / "postgres").resolve()
        assert not outside.is_relative_to(private)
        assert (outside / "PG_VERSION").is_file()
    finally:
        shutil.rmtree((private / "embedded" / "postgres").resolve().parent, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
