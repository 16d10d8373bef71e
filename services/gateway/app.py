"""The Litestar application: routes, dependencies, error handling and the lifespan of its connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import cast

import structlog
from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from services.gateway import (
    accounts,
    auth,
    health,
    live,
    notifications,
    outbox,
    pages,
    unsubscribe,
    watches,
    webhooks,
)
from services.gateway.csrf import require_json
from services.gateway.errors import http_error, internal_error
from services.gateway.live import LiveHub
from services.gateway.resources import Resources, provide_js, provide_nc, provide_pool, provide_redis
from services.gateway.sessions import current_user_id
from shared.cache import create_redis
from shared.db import create_pool
from shared.messaging import connect_nats
from shared.settings import Settings
from shared.streams import Topology

log = structlog.get_logger()


def create_app(settings: Settings, *, ping_interval: float = 15.0) -> Litestar:
    """Build the gateway. Raises SettingsError when SECRET_KEY is missing or too short."""
    settings.require_secret_key()
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    hub = LiveHub(topology, ping_interval=ping_interval)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            pool = await create_pool(settings.database_url)
            stack.push_async_callback(pool.close)
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            nc = await connect_nats(settings.nats_url, "pmc-gateway")
            stack.push_async_callback(nc.drain)
            await hub.start(nc)
            stack.push_async_callback(hub.stop)
            app.state.resources = Resources(pool=pool, redis=redis, nc=nc, js=nc.jetstream())
            log.info("gateway started", namespace=settings.namespace)
            yield
        log.info("gateway stopped")

    handlers: list[ControllerRouterHandler] = [
        auth.register,
        auth.login,
        auth.logout,
        auth.me,
        auth.update_me,
        accounts.verify_email,
        accounts.reset_page,
        accounts.reset_password,
        accounts.resend_verification,
        accounts.forgot_password,
        watches.list_watches,
        watches.add_watch,
        watches.delete_watch,
        watches.update_watch,
        notifications.list_notifications,
        webhooks.resend_webhook,
        live.events,
        health.healthz,
        health.readyz,
        PrometheusController,
        pages.index,
        pages.terms,
        unsubscribe.unsubscribe_page,
        unsubscribe.unsubscribe,
        create_static_files_router(path="/static", directories=[pages.STATIC], include_in_schema=False),
    ]
    if settings.require_email_backend() == "outbox":
        handlers += [outbox.outbox_page, outbox.outbox_json]

    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "topology": Provide(lambda: topology, sync_to_thread=False),
            "hub": Provide(lambda: hub, sync_to_thread=False),
            "pool": Provide(provide_pool, sync_to_thread=False),
            "redis": Provide(provide_redis, sync_to_thread=False),
            "nc": Provide(provide_nc, sync_to_thread=False),
            "js": Provide(provide_js, sync_to_thread=False),
            "user_id": Provide(current_user_id),
        },
        before_request=require_json,
        # Request counts and latencies by route template (never by raw path: ids would explode the labels).
        middleware=[
            PrometheusConfig(app_name="pmc_gateway", group_path=True, exclude=["/metrics"]).middleware
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=[lifespan],
        logging_config=None,
        openapi_config=None,
        debug=False,
    )
    app.state.hub = hub
    return app


def close_live_streams(app: Litestar) -> None:
    """End all open SSE streams, so a shutdown does not wait for browsers to hang up."""
    cast(LiveHub, app.state.hub).close_streams()
