"""Every error reaches the client as a short message, never a stack trace: JSON for the API, else HTML."""

from __future__ import annotations

import html
from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

log = structlog.get_logger()

INTERNAL_ERROR = "internal error"


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path.endswith(".json") or path in ("/healthz", "/readyz")


def html_page(title: str, body_html: str, *, status_code: int = 200) -> Response[str]:
    """A minimal standalone page (error pages, unsubscribe, outbox)."""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · PickMyClass</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;"
        "color:#1f2933;line-height:1.5}a{color:#8c1d40}button{font:inherit;padding:.5rem 1.2rem;"
        "border:0;border-radius:6px;background:#8c1d40;color:#fff;cursor:pointer}"
        "pre{white-space:pre-wrap;background:#f5f5f4;padding:.75rem;border-radius:6px}"
        "iframe{width:100%;height:22rem;border:1px solid #ddd;border-radius:6px}"
        ".mail{border-top:1px solid #ddd;padding:1rem 0}.meta{color:#52606d;font-size:.9rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return Response(page, status_code=status_code, media_type=MediaType.HTML)


def _error(
    request: Request[Any, Any, Any], status_code: int, detail: str, headers: dict[str, str]
) -> Response[Any]:
    if _wants_json(request):
        return Response(
            {"detail": detail}, status_code=status_code, headers=headers, media_type=MediaType.JSON
        )
    page = html_page(
        "Something went wrong",
        f'<p>{html.escape(detail)}</p><p><a href="/">Back</a></p>',
        status_code=status_code,
    )
    page.headers.update(headers)
    return page


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _error(request, exc.status_code, exc.detail, dict(exc.headers or {}))


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("request failed", method=request.method, path=request.url.path, exc_info=exc)
    return _error(request, 500, INTERNAL_ERROR, {})
