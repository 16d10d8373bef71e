"""The whole system for end-to-end tests: every service its own process, on a namespace and database of
its own, with the catalog simulator and the Resend fake (the two outside systems) on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from devtools.net import free_port
from devtools.prepare_tests import chromium
from shared.streams import Topology
from tests.factories import OPEN_TERM
from tests.infra import REPO

SERVICES = ("detector", "notifier", "scraper", "scheduler", "gateway")
WORKERS = ("scheduler", "scraper", "detector", "notifier")
# Watches are added through the API, which takes only current and future terms.
TERM = OPEN_TERM.code
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, within: float = 30.0) -> T:
    """Poll `probe` until it returns something truthy. Used only where nothing can be awaited: the state
    of another process (the fake's mailbox, a consumer's counters)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class System:
    env: dict[str, str]
    logs: Path
    gateway_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Each worker's /healthz, /readyz and /metrics.
    health_urls: dict[str, str] = field(default_factory=dict)

    def run_setup(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "shared.setup"], cwd=REPO, env=self.env, capture_output=True, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"setup failed: {result.stderr.decode()[-2000:]}")

    def start(self, name: str) -> None:
        env = dict(self.env)
        if name in WORKERS:
            # A restarted worker keeps its port, so a test can keep asking the same URL.
            port = self.health_urls.get(name, f"http://127.0.0.1:{free_port()}").rsplit(":", 1)[1]
            self.health_urls[name] = f"http://127.0.0.1:{port}"
            env["HEALTH_PORT"] = port
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=REPO, env=env, stdout=log, stderr=log
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every service and wait without blocking the loop (the fakes run on it)."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        self.processes.clear()
        return codes

    def crashed(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def log_tails(self, lines: int = 25) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            if self.crashed():
                raise AssertionError(f"{self.crashed()} exited during start-up\n{self.log_tails()}")
            urls = [self.gateway_url, *(self.health_urls[name] for name in self.processes if name in WORKERS)]
            try:
                async with httpx.AsyncClient() as client:
                    answers = [await client.get(f"{url}/readyz") for url in urls]
            except httpx.HTTPError:
                return False
            return all(answer.status_code == 200 for answer in answers)

        await eventually(ready, "every service to be ready", within=60)


def system_env(
    *, nats_url: str, database_url: str, redis_url: str, namespace: str, asu_api_url: str, resend_url: str
) -> tuple[dict[str, str], str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PMC_", "TEST_"))}
    env.update(
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        NAMESPACE=namespace,
        ASU_API_URL=asu_api_url,
        ASU_CATALOG_URL=asu_api_url.split("/catalog-microservices")[0],
        CHROMIUM_PATH=str(chromium() or ""),
        # After the class-list page test reopens the API's door, the next checks use the API again soon.
        ASU_API_RETRY_SECONDS="5",
        EMAIL_BACKEND="resend",
        RESEND_API_KEY="re_e2e_test_key",
        RESEND_API_URL=resend_url,
        EMAIL_FROM="PickMyClass <alerts@pickmyclass.test>",
        CHECK_INTERVAL_SECONDS="1",
        # Provider outages are retried every second here, not every 5 minutes: an outage longer than any
        # fixed retry budget fits in a test.
        EMAIL_RETRY_MAX_SECONDS="1",
        GATEWAY_PORT=str(port),
        SITE_URL=f"http://127.0.0.1:{port}",
        SECRET_KEY="e2e-secret-key-0123456789abcdef",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env, f"http://127.0.0.1:{port}"


@dataclasses.dataclass
class World:
    system: System
    catalog: httpx.AsyncClient
    resend_url: str
    topology: Topology
    database_url: str


async def add_section(world: World, class_nbr: str, **fields: Any) -> None:
    body = {
        "term": TERM,
        "class_nbr": class_nbr,
        "subject": "CSE",
        "catalog_nbr": "310",
        "title": "Data Structures and Algorithms",
        "enrl_cap": 100,
        "enrl_tot": 100,
        "instructors": [],
        **fields,
    }
    (await world.catalog.post("/_sim/sections", json=body)).raise_for_status()


async def change_section(world: World, class_nbr: str, **fields: Any) -> None:
    (await world.catalog.patch(f"/_sim/sections/{TERM}/{class_nbr}", json=fields)).raise_for_status()
