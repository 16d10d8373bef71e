"""`make run`: the whole PickMyClass on one machine, usable in a browser.

Servers: NATS_URL / DATABASE_URL / REDIS_URL when set; otherwise the standard local ports when something
listens there; otherwise (or always, with PMC_EMBEDDED=1) embedded servers from PyPI wheels, with data
under `.data/embedded/`. The class search: ASU_API_URL when set, else the catalog simulator in demo mode.
Then `python -m shared.setup`, then the five services, each its own process. Ctrl-C stops everything.

The environment the services get is written to `.data/env` (`source .data/env`, then run one service or
`pmc` from a shell against the same system). One `make run` per checkout: a second one says where the
first is and stops.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devtools.catalog_sim.app import demo_watch_list
from devtools.embedded import EmbeddedError, EmbeddedServers, EmbeddedStack
from devtools.net import answers
from devtools.prepare_tests import chromium
from shared.settings import redact_url

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".data"
SERVICES = ("detector", "notifier", "scraper", "scheduler", "gateway")
# /healthz, /readyz and /metrics of each worker.
HEALTH_PORTS = {"scheduler": 9101, "scraper": 9102, "detector": 9103, "notifier": 9104}
LOCAL_NATS_MONITOR = "http://127.0.0.1:8222"
ENV_FILE = DATA / "env"
LOCK_FILE = DATA / "run.lock"
# Written to the env file for a developer's shell: what the services need to join this system.
SHARED_VARIABLES = (
    "NATS_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "ASU_API_URL",
    "ASU_CATALOG_URL",
    "CHROMIUM_PATH",
    "CHECK_INTERVAL_SECONDS",
    "EMAIL_BACKEND",
    "RESEND_API_KEY",
    "RESEND_API_URL",
    "SECRET_KEY",
    "RESEND_WEBHOOK_SECRET",
    "NAMESPACE",
    "GATEWAY_PORT",
    "SITE_URL",
    "HEALTH_URLS",
)
LOCAL_DEFAULTS = {
    "nats": ("NATS_URL", "nats://127.0.0.1:4222"),
    "postgres": ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/pickmyclass"),
    "redis": ("REDIS_URL", "redis://127.0.0.1:6379/0"),
}
SIM_PORT = int(os.environ.get("PMC_SIM_PORT", "8001"))
DEMO_CHECK_INTERVAL = "20"
STOP_GRACE_SECONDS = 8.0


def say(message: str) -> None:
    print(f"pickmyclass | {message}", flush=True)


def choose_servers(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """URLs to use for what is configured or already listening, and the components to embed."""
    chosen: dict[str, str] = {}
    embed: list[str] = []
    forced = env.get("PMC_EMBEDDED") == "1"
    for component, (variable, default) in LOCAL_DEFAULTS.items():
        if forced:
            embed.append(component)
        elif env.get(variable):
            chosen[variable] = env[variable]
        elif answers(default, timeout=0.5):
            chosen[variable] = default
        else:
            embed.append(component)
    return chosen, embed


def kept_secret(name: str, make: Callable[[], str]) -> str:
    """A per-checkout development secret, kept so sessions and signed links survive restarts."""
    path = DATA / name
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def secret_key() -> str:
    return kept_secret("secret_key", lambda: secrets.token_urlsafe(32))


def webhook_secret() -> str:
    # Svix's form: `whsec_` and base64 of random bytes.
    return kept_secret(
        "webhook_secret", lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )


@dataclass
class Supervisor:
    env: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False

    def spawn(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        # Own session: the terminal's Ctrl-C reaches only this supervisor, which stops children in order.
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env={**self.env, **(extra_env or {})},
            start_new_session=True,
        )

    def run_once(self, *args: str) -> int:
        return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=self.env, check=False).returncode

    def exited(self) -> list[tuple[str, int]]:
        return [(name, code) for name, child in self.children.items() if (code := child.poll()) is not None]

    def stop(self) -> None:
        for child in reversed(self.children.values()):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, child in reversed(self.children.items()):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in {STOP_GRACE_SECONDS:.0f} s; killing it")
                child.kill()
                child.wait()


def wait_for_http(url: str, supervisor: Supervisor, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.exited():
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def build_env(chosen: dict[str, str], embedded: EmbeddedServers | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(chosen)
    if embedded is not None:
        for variable, url in (
            ("NATS_URL", embedded.nats_url),
            ("DATABASE_URL", embedded.database_url),
            ("REDIS_URL", embedded.redis_url),
        ):
            if url:
                env[variable] = url
    env.setdefault("SECRET_KEY", secret_key())
    # So that `python -m devtools.resend_webhooks` can sign test webhooks for this system.
    env.setdefault("RESEND_WEBHOOK_SECRET", webhook_secret())
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The scraper's browser fallback uses Debian's Chromium where there is one (Playwright cannot download).
    if not env.get("CHROMIUM_PATH") and (found := chromium()) is not None:
        env["CHROMIUM_PATH"] = str(found)
    # Emails are kept in the development outbox unless a Resend key is given: chosen here, explicitly.
    env.setdefault("EMAIL_BACKEND", "resend" if env.get("RESEND_API_KEY") else "outbox")
    env.setdefault(
        "HEALTH_URLS",
        ",".join(f"{name}=http://127.0.0.1:{port}/readyz" for name, port in HEALTH_PORTS.items()),
    )
    return env


def write_env_file(env: dict[str, str]) -> None:
    """The environment of this system for a developer's shell; private, since it holds SECRET_KEY."""
    lines = ["# Written by `make run`: `source .data/env` to run one service or `pmc` against this system."]
    lines += [f"export {name}={shlex.quote(env[name])}" for name in SHARED_VARIABLES if env.get(name)]
    DATA.mkdir(exist_ok=True)
    partial = ENV_FILE.with_suffix(".partial")
    partial.touch(mode=0o600)
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(ENV_FILE)


def hold_lock() -> IO[str] | None:
    """This checkout's `make run` lock, or None (after saying where the other run is) when it is taken."""
    DATA.mkdir(exist_ok=True)
    handle = LOCK_FILE.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        say(f"already running here ({holder}): use that one, or stop it (Ctrl-C in its terminal) first")
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def nats_monitor_url(embedded: EmbeddedServers | None, env: dict[str, str]) -> str | None:
    if embedded is not None and embedded.nats_monitor_url and env["NATS_URL"] == embedded.nats_url:
        return embedded.nats_monitor_url
    if env["NATS_URL"] == LOCAL_DEFAULTS["nats"][1] and answers(LOCAL_NATS_MONITOR, timeout=0.5):
        return LOCAL_NATS_MONITOR
    return None


def main() -> int:
    lock = hold_lock()
    if lock is None:
        return 1
    with lock:
        return start(lock)


def start(lock: IO[str]) -> int:
    chosen, embed = choose_servers(dict(os.environ))
    stack: EmbeddedStack | None = None
    embedded: EmbeddedServers | None = None
    if embed:
        say(f"starting embedded {', '.join(embed)} (data in {DATA / 'embedded'})")
        stack = EmbeddedStack(DATA / "embedded", components=embed)
        try:
            embedded = stack.start()
        except EmbeddedError as exc:
            say(f"cannot start embedded servers: {exc}")
            return 1
    env = build_env(chosen, embedded)
    supervisor = Supervisor(env)
    monitor = nats_monitor_url(embedded, env)

    def request_stop(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        return serve(supervisor, monitor, lock)
    finally:
        supervisor.stop()
        if stack is not None:
            stack.stop()
        say("stopped")


def serve(supervisor: Supervisor, monitor: str | None, lock: IO[str]) -> int:
    env = supervisor.env
    for variable in ("NATS_URL", "DATABASE_URL", "REDIS_URL"):
        say(f"{variable}={redact_url(env[variable])}")
    if supervisor.run_once("shared.setup") != 0:
        say("setup failed (see the error above)")
        return 1
    simulated = not env.get("ASU_API_URL")
    if simulated:
        if answers(f"http://127.0.0.1:{SIM_PORT}", timeout=0.5):
            say(f"port {SIM_PORT} is taken: free it or set PMC_SIM_PORT, or set ASU_API_URL")
            return 1
        supervisor.spawn("catalog-sim", "devtools.catalog_sim", "--demo", "--port", str(SIM_PORT))
        env["ASU_API_URL"] = f"http://127.0.0.1:{SIM_PORT}/catalog-microservices/api/v1"
        # The simulator also serves the class-list page the scraper's browser falls back to.
        env.setdefault("ASU_CATALOG_URL", f"http://127.0.0.1:{SIM_PORT}")
        env.setdefault("CHECK_INTERVAL_SECONDS", DEMO_CHECK_INTERVAL)
        if not wait_for_http(f"http://127.0.0.1:{SIM_PORT}/_sim/stats", supervisor, timeout=30):
            say("the catalog simulator did not start")
            return 1
    port = env.get("GATEWAY_PORT", "8000")
    for taken, variable in [
        (int(port), "GATEWAY_PORT"),
        *((p, f"the {n} health port") for n, p in HEALTH_PORTS.items()),
    ]:
        if answers(f"http://127.0.0.1:{taken}", timeout=0.5):
            say(f"port {taken} ({variable}) is taken: free it (is another PickMyClass running?)")
            return 1
    write_env_file(env)
    for name in SERVICES:
        health = {"HEALTH_PORT": str(HEALTH_PORTS[name])} if name in HEALTH_PORTS else {}
        supervisor.spawn(name, f"services.{name}", extra_env=health)
    site = env.get("SITE_URL", f"http://localhost:{port}")
    ready = [
        f"http://127.0.0.1:{port}/readyz",
        *(f"http://127.0.0.1:{p}/readyz" for p in HEALTH_PORTS.values()),
    ]
    if not all(wait_for_http(url, supervisor) for url in ready):
        say("a service did not become ready (see the errors above)")
        return 1
    say(f"PickMyClass is running: {site}")
    lock.write(f", {site}")
    lock.flush()
    say(f"  gateway    {site}/readyz  {site}/metrics")
    for name, health_port in HEALTH_PORTS.items():
        say(f"  {name:<10} http://127.0.0.1:{health_port}/readyz  /healthz  /metrics")
    if monitor is not None:
        say(f"  NATS monitoring {monitor}/jsz?consumers=true")
    else:
        say("  NATS monitoring is not enabled on this NATS server (nats-server -m 8222 enables it)")
    say(f"to run one service or `.venv/bin/pmc status` from a shell: source {ENV_FILE.relative_to(REPO)}")
    if simulated:
        say("the class search is simulated; seats in these full sections open within a minute:")
        for section in demo_watch_list():
            say(f"  term {section.term}  class {section.class_nbr}  {section.subject} {section.catalog_nbr}")
    if env["EMAIL_BACKEND"] == "outbox":
        say(f"emails are kept, not sent: {site}/dev/outbox")
    say("press Ctrl-C to stop")
    while not supervisor.stopping:
        ended = supervisor.exited()
        if ended:
            name, code = ended[0]
            say(f"{name} exited with code {code}; stopping everything")
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
