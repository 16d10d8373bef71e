"""How a worker answers "how are you?": `GET /healthz`, `GET /readyz` and `GET /metrics` on HEALTH_PORT.

A small Litestar app served by uvicorn inside the worker's own event loop. `/healthz` is 200 while the
loop runs; `/readyz` runs every registered check (each bounded in time) and answers 503 naming the reason
of each failing one; `/metrics` is prometheus-client's exposition of `shared.metrics`. Later features
(the source breaker, the email provider's verdict on our configuration) register their own checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field

import asyncpg
import structlog
import uvicorn
from litestar import Litestar, MediaType, Response, get
from litestar.plugins.prometheus import PrometheusController
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from shared.streams import Consumer

log = structlog.get_logger()

CHECK_TIMEOUT_SECONDS = 2.0

Check = Callable[[], Awaitable[None]]


class NotReady(Exception):
    """A readiness check failed; the message is the reason an operator reads in `/readyz`."""


@dataclass
class Readiness:
    """Named checks; each raises (NotReady with a reason, or anything else) when not ready."""

    checks: dict[str, Check] = field(default_factory=dict)

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def _run(self, name: str, check: Check) -> tuple[str, str]:
        try:
            await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
        except NotReady as exc:
            return name, str(exc)
        except TimeoutError:
            return name, f"no answer within {CHECK_TIMEOUT_SECONDS:.0f} s"
        except Exception as exc:
            return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return name, "ok"

    async def report(self) -> dict[str, str]:
        """Each check's name with "ok" or the reason it failed."""
        results = await asyncio.gather(*(self._run(name, check) for name, check in self.checks.items()))
        return dict(results)


def nats_check(nc: Client) -> Check:
    async def check() -> None:
        if not nc.is_connected:
            raise NotReady("not connected to NATS (reconnecting)")
        await nc.flush(timeout=1)

    return check


def postgres_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        await pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)

    return check


def consumer_check(nc: Client, consumer: Consumer) -> Check:
    async def check() -> None:
        try:
            await nc.jetstream().consumer_info(consumer.stream, consumer.durable, timeout=1)
        except NotFoundError:
            raise NotReady(
                f"JetStream consumer {consumer.durable} on stream {consumer.stream} is missing: "
                "run `python -m shared.setup`"
            ) from None
        except NatsError as exc:
            raise NotReady(f"cannot read consumer {consumer.durable}: {exc}") from None

    return check


def stream_check(nc: Client, stream: str) -> Check:
    async def check() -> None:
        try:
            await nc.jetstream().stream_info(stream)
        except NotFoundError:
            raise NotReady(f"JetStream stream {stream} is missing: run `python -m shared.setup`") from None

    return check


def health_app(readiness: Readiness) -> Litestar:
    @get("/healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON)
    async def readyz() -> Response[dict[str, object]]:
        checks = await readiness.report()
        ready = all(result == "ok" for result in checks.values())
        if not ready:
            log.warning("not ready", checks={k: v for k, v in checks.items() if v != "ok"})
        return Response(
            {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
        )

    return Litestar(
        route_handlers=[healthz, readyz, PrometheusController],
        logging_config=None,
        openapi_config=None,
        debug=False,
    )


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The worker owns SIGINT/SIGTERM (it drains its batch first); this server only stops when told.
        yield


class HealthServer:
    """Serves `health_app` on 0.0.0.0:`port` (0: any free port) until `stop()`."""

    def __init__(self, readiness: Readiness, port: int, host: str = "0.0.0.0") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise OSError(f"HEALTH_PORT {port} is not free: {exc.strerror}") from None
        # Listening before uvicorn takes over: a probe that comes early waits in the backlog, not refused.
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            health_app(readiness),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        log.info("health server listening", port=self.port)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()
