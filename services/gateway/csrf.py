"""The CSRF defence, without a token step.

State-changing API calls must be JSON. A cross-site HTML form can only send urlencoded, multipart or plain
text bodies, and a cross-site `fetch` with `Content-Type: application/json` (or with DELETE/PUT/PATCH)
needs a CORS preflight, which this app never grants. Together with the SameSite=Lax session cookie, a
foreign page cannot make a logged-in browser change anything here. `/unsubscribe` is outside `/api/` on
purpose: it is authorised by its signed token, and RFC 8058 one-click requests are form-encoded.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ALWAYS_JSON = frozenset({"POST", "PUT", "PATCH"})


def needs_json(method: str, path: str, has_body: bool) -> bool:
    if not path.startswith("/api/") or method not in UNSAFE_METHODS:
        return False
    return method in _ALWAYS_JSON or has_body


def is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def declared_too_large(content_length: str, limit: int | None) -> bool:
    """Whether a body announced as `content_length` bytes is over `limit` (malformed lengths are left to
    the server, which refuses them)."""
    return limit is not None and content_length.isdigit() and int(content_length) > limit


async def require_json(request: Request[Any, Any, Any]) -> None:
    """`before_request` hook: reject a state-changing API call that is not JSON with 415, a body announced
    larger than the route takes with 413 (whether or not the handler would read it), and any path with a
    NUL character with 400 (no file or route has one; the static files router would fail on it)."""
    if "\x00" in request.url.path:
        raise HTTPException(status_code=400, detail="the path holds a NUL character")
    headers = request.headers
    if declared_too_large(
        headers.get("content-length", ""), request.route_handler.resolve_request_max_body_size()
    ):
        raise HTTPException(status_code=413)
    has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
    if needs_json(request.method, request.url.path, has_body) and not is_json(
        headers.get("content-type", "")
    ):
        raise HTTPException(
            status_code=415, detail="this endpoint accepts only JSON: send Content-Type: application/json"
        )
