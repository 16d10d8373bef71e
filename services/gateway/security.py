"""Security headers on every answer (an ASGI middleware), and the policy they state.

- `Content-Security-Policy`: our own scripts, styles, images and connections only, nothing inline (an
  injected `<script>` does not run), `data:` images (the favicon), no framing (`frame-ancestors 'none'`
  against clickjacking), no plugins, no `<base>` rewriting, forms post only to us. A route that needs
  another policy (the development outbox shows emails with their inline styles) sets its own.
- `X-Content-Type-Options: nosniff`: a file is what its type says (no upload or JSON runs as script).
- `Referrer-Policy: no-referrer`: unsubscribe, verification and reset pages carry a token in their URL; with
  no Referer at all, no link or resource on any page can hand such a URL on (not to the catalog or Rate My
  Professors, not even to our own ingress's access logs). Nothing here uses the Referer.
- `Strict-Transport-Security` when SITE_URL is https (browsers ignore it over http; `make run` is http).
- `Cache-Control: no-store` on every `/api/` answer: they are per student and must not stay in caches.

Answers the router gives before any middleware runs (an unknown path, a wrong method) get the same headers
from the error handler (`services/gateway/errors.py`), all but HSTS, which browsers keep from any other
answer of the site.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def headers_for(path: str, *, hsts: bool) -> dict[str, str]:
    """The security headers an answer to `path` carries."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if hsts:
        headers["Strict-Transport-Security"] = HSTS
    if path.startswith("/api/"):
        headers["Cache-Control"] = "no-store"
    return headers


# A handler's own value wins for these (a stricter or a purpose-made policy); the others are always ours.
_HANDLER_MAY_SET = frozenset({"Content-Security-Policy", "Referrer-Policy"})


class SecurityHeaders(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, *, https: bool) -> None:
        self.https = https

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        wanted = headers_for(scope["path"], hsts=self.https)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in wanted.items():
                    if name not in _HANDLER_MAY_SET or name not in headers:
                        headers[name] = value
            await send(message)

        await next_app(scope, receive, send_with_headers)
