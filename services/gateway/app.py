"""The Litestar application: routes, dependencies, error handling and the lifespan of its connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import cast

import structlog
from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from services.gateway import (
    account_api,
    accounts,
    admin_api,
    admin_pages,
    auth,
    health,
    history,
    live,
    notifications,
    outbox,
    pages,
    sections,
    terms,
    unsubscribe,
    watches,
    webhooks,
)
from services.gateway.csrf import require_json
from services.gateway.errors import UNAVAILABLE_HANDLERS, http_error, internal_error
from services.gateway.live import LiveHub
from services.gateway.resources import (
    Resources,
    open_pool,
    provide_js,
    provide_nc,
    provide_pool,
    provide_redis,
)
from services.gateway.security import SecurityHeaders
from services.gateway.sessions import current_user_id
from services.gateway.throttle import Throttles
from shared.cache import create_redis
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
            pool = await open_pool(settings)
            stack.push_async_callback(pool.close)
            redis = create_redis(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                wait_seconds=settings.pool_wait_seconds,
            )
            stack.push_async_callback(redis.aclose)
            nc = await connect_nats(settings.nats_url, "pmc-gateway")
            stack.push_async_callback(nc.drain)
            await hub.start(nc)
            stack.push_async_callback(hub.stop)
            throttles = Throttles(settings.namespace, settings.redis_url, redis)
            app.state.resources = Resources(
                pool=pool, redis=redis, nc=nc, js=nc.jetstream(), throttles=throttles
            )
            log.info("gateway started", namespace=settings.namespace)
            yield
        log.info("gateway stopped")

    handlers: list[ControllerRouterHandler] = [
        auth.register,
        auth.login,
        auth.logout,
        auth.logout_everywhere,
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
        watches.add_watches,
        history.watch_history,
        sections.preview_section,
        notifications.list_notifications,
        webhooks.resend_webhook,
        live.events,
        health.healthz,
        health.readyz,
        PrometheusController,
        pages.router,
        admin_pages.admin_page,
        terms.list_terms,
        unsubscribe.unsubscribe_page,
        unsubscribe.unsubscribe,
        unsubscribe.resubscribe,
        unsubscribe.stop_watching_page,
        unsubscribe.stop_watching,
        account_api.export_account,
        account_api.delete_account,
        account_api.get_default_alerts,
        account_api.update_default_alerts,
        admin_api.router,
        create_static_files_router(path="/static", directories=[pages.STATIC], include_in_schema=False),
    ]
    if settings.require_email_backend() == "outbox":
        handlers += [outbox.outbox_page, outbox.outbox_json, outbox.outbox_email_html]

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
            PrometheusConfig(app_name="pmc_gateway", group_path=True, exclude=["/metrics"]).middleware,
            SecurityHeaders(https=settings.site_url.startswith("https://")),
        ],
        exception_handlers={
            HTTPException: http_error,
            Exception: internal_error,
            # Saturation or a dependency away: 503 with Retry-After.
            **UNAVAILABLE_HANDLERS,
        },
        # The API takes small JSON bodies; the webhook sets its own limit.
        request_max_body_size=16 * 1024,
        lifespan=[lifespan],
        template_config=pages.template_config(),
        logging_config=None,
        # JSON only (/schema and /schema/openapi.json): the rendered viewers load scripts from CDNs.
        openapi_config=OpenAPIConfig(
            title="PickMyClass", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]
        ),
        debug=False,
    )
    app.state.hub = hub
    return app


def close_live_streams(app: Litestar) -> None:
    """End all open SSE streams, so a shutdown does not wait for browsers to hang up."""
    cast(LiveHub, app.state.hub).close_streams()
