"""`python -m services.gateway`: serve the gateway on GATEWAY_HOST:GATEWAY_PORT until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Generator
from types import FrameType

import uvicorn
from litestar import Litestar

from services.gateway.app import close_live_streams, create_app
from shared.logging import configure_logging
from shared.settings import SettingsError, load_settings

# Backstop only: open live streams are ended as soon as the signal arrives.
GRACEFUL_SHUTDOWN_SECONDS = 10


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises the stop signal after a graceful shutdown, so the process would end with
            # 143; a stop that completed is a clean exit for supervisors and `make run`.
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in a signal handler: hand the work to the event loop instead of touching asyncio here.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(close_live_streams, self._app)
        super().handle_exit(sig, frame)


def main() -> int:
    try:
        settings = load_settings()
        app = create_app(settings)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    log = configure_logging(settings, "gateway")
    log.info("gateway starting", port=settings.gateway_port, site_url=settings.site_url)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # X-Forwarded-For is believed only from the proxies named in TRUSTED_PROXIES: otherwise anyone could
        # pick the address the per-network throttles count, and behind an ingress every student would share
        # the ingress's address.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )
    GatewayServer(config, app).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
