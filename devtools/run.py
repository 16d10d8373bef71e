"""`make run`: the whole PickMyClass on one machine, usable in a browser.

Servers: NATS_URL / DATABASE_URL / REDIS_URL when set; otherwise the standard local ports when something
listens there; otherwise (or always, with PMC_EMBEDDED=1) embedded servers from PyPI wheels, with data
under `.data/embedded/`. The class search: ASU_API_URL when set, else the catalog simulator in demo mode.
Then `python -m shared.setup`, then the five services, each its own process. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.catalog_sim.app import demo_watch_list
from devtools.embedded import EmbeddedError, EmbeddedServers, EmbeddedStack
from devtools.net import answers
from shared.settings import redact_url

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".data"
SERVICES = ("detector", "notifier", "scraper", "scheduler", "gateway")
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


def secret_key() -> str:
    """A per-checkout development secret, kept so sessions and unsubscribe links survive restarts."""
    path = DATA / "secret_key"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class Supervisor:
    env: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False

    def spawn(self, name: str, *args: str) -> None:
        # Own session: the terminal's Ctrl-C reaches only this supervisor, which stops children in order.
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=REPO, env=self.env, start_new_session=True
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
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def main() -> int:
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

    def request_stop(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        return serve(supervisor)
    finally:
        supervisor.stop()
        if stack is not None:
            stack.stop()
        say("stopped")


def serve(supervisor: Supervisor) -> int:
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
        env.setdefault("CHECK_INTERVAL_SECONDS", DEMO_CHECK_INTERVAL)
        if not wait_for_http(f"http://127.0.0.1:{SIM_PORT}/_sim/stats", supervisor, timeout=30):
            say("the catalog simulator did not start")
            return 1
    port = env.get("GATEWAY_PORT", "8000")
    if answers(f"http://127.0.0.1:{port}", timeout=0.5):
        say(f"port {port} is taken: free it or set GATEWAY_PORT")
        return 1
    for name in SERVICES:
        supervisor.spawn(name, f"services.{name}")
    site = env.get("SITE_URL", f"http://localhost:{port}")
    if not wait_for_http(f"http://127.0.0.1:{port}/readyz", supervisor):
        say("the gateway did not become ready (see the errors above)")
        return 1
    say(f"PickMyClass is running: {site}")
    if simulated:
        say("the class search is simulated; seats in these full sections open within a minute:")
        for section in demo_watch_list():
            say(f"  term {section.term}  class {section.class_nbr}  {section.subject} {section.catalog_nbr}")
    if env.get("EMAIL_BACKEND", "outbox" if not env.get("RESEND_API_KEY") else "resend") == "outbox":
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
