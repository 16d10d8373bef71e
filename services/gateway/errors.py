"""Every error reaches the client as a short message, never a stack trace: JSON for the API, else HTML.

Saturation and unavailable dependencies (no free PostgreSQL or Redis connection within POOL_WAIT_SECONDS,
a server that does not answer, too many password checks waiting) are a 503 with `Retry-After`, never a
500: the client did nothing wrong and may simply try again.
"""

from __future__ import annotations

import html
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
import redis.exceptions
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from services.gateway.passwords import HashingBusy
from services.gateway.security import headers_for

log = structlog.get_logger()

INTERNAL_ERROR = "internal error"
UNAVAILABLE = "the service is busy: try again in a few seconds"
UNAVAILABLE_RETRY_SECONDS = 5
TOO_LARGE = "the request body is too large (at most 16 KB)"
NOT_FOUND = "Not Found"

# What "busy or briefly unreachable" looks like from here. TimeoutError covers asyncpg's wait for a pool
# connection and NATS request timeouts; Redis raises its ConnectionError when its pool has no connection.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    ConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    HashingBusy,
)


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path.endswith(".json") or path in ("/healthz", "/readyz")


def html_page(title: str, body_html: str, *, status_code: int = 200) -> Response[str]:
    """A minimal standalone page (error pages, unsubscribe, outbox), styled by the site's own sheet: the
    content security policy allows no inline style."""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · PickMyClass</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/app.css">'
        f"</head><body><main><h1>{html.escape(title)}</h1>{body_html}</main></body></html>"
    )
    return Response(page, status_code=status_code, media_type=MediaType.HTML)


def _error(
    request: Request[Any, Any, Any], status_code: int, detail: str, headers: dict[str, str]
) -> Response[Any]:
    # Also the answer to what never reached a route (unknown path, wrong method), where the security
    # headers middleware does not run (see services/gateway/security.py).
    headers = {**headers_for(request.url.path, hsts=False), **headers}
    if _wants_json(request):
        return Response(
            {"detail": detail}, status_code=status_code, headers=headers, media_type=MediaType.JSON
        )
    if status_code == 404:
        # Lazy: the pages import modules that import this one.
        from services.gateway.pages import not_found_page

        missing = not_found_page()
        missing.headers.update(headers)
        return missing
    page = html_page(
        "Something went wrong",
        f'<p>{html.escape(detail)}</p><p><a href="/">Back</a></p>',
        status_code=status_code,
    )
    page.headers.update(headers)
    return page


def _detail(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    if exc.status_code == 413:
        return TOO_LARGE
    # The static files router names the file it looked for; nobody needs to read that.
    if exc.status_code == 404 and request.url.path.startswith("/static/"):
        return NOT_FOUND
    return exc.detail


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _error(request, exc.status_code, _detail(request, exc), dict(exc.headers or {}))


def unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning(
        "request refused: busy or a dependency is unavailable",
        method=request.method,
        path=request.url.path,
        error=type(exc).__name__,
        reason=str(exc)[:200],
    )
    return _error(request, 503, UNAVAILABLE, {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)})


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("request failed", method=request.method, path=request.url.path, exc_info=exc)
    return _error(request, 500, INTERNAL_ERROR, {})


UNAVAILABLE_HANDLERS: ExceptionHandlersMap = dict.fromkeys(UNAVAILABLE_ERRORS, unavailable)
