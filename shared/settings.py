"""Typed settings, read once from the environment.

Every variable is documented in the README's configuration table. Secrets (`RESEND_API_KEY`,
`SECRET_KEY`, passwords in URLs) come only from the environment and are never logged:
`Settings.__repr__` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

DEFAULT_ASU_API_URL = "https://eadvs-cscc-catalog-api.apps.asu.edu/catalog-microservices/api/v1"
DEFAULT_ASU_CATALOG_URL = "https://catalog.apps.asu.edu"

# "": not chosen; the services that send or show email refuse to start (`require_email_backend`).
EmailBackendName = Literal["resend", "outbox", ""]

_SECRET_FIELDS = frozenset({"resend_api_key", "secret_key", "resend_webhook_secret"})
_URL_FIELDS = frozenset({"nats_url", "database_url", "redis_url"})


def redact_url(url: str) -> str:
    """`url` with any password replaced, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


def _shown(name: str, value: object) -> object:
    if name in _SECRET_FIELDS and value:
        return "***"
    if name in _URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    return value


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/pickmyclass"
    redis_url: str = "redis://127.0.0.1:6379/0"
    asu_api_url: str = DEFAULT_ASU_API_URL
    # The public class-list page the scraper's browser opens when the API shuts us out.
    asu_catalog_url: str = DEFAULT_ASU_CATALOG_URL
    # One request budget for every scraper replica (a moving 60-second window in Redis).
    asu_requests_per_minute: int = 600
    # The shared circuit breaker: this many consecutive failures open it; after the cool-down a few
    # probes go through; this many successes close it again.
    asu_breaker_failures: int = 10
    asu_breaker_cooldown_seconds: float = 120.0
    asu_breaker_successes: int = 3
    # After the API shut us out (401/403, or a shape we cannot read), how long the browser is used before
    # the API is tried again.
    asu_api_retry_seconds: float = 600.0
    # Browser contexts (pages at once) in each scraper's Chromium; Debian's Chromium is /usr/bin/chromium,
    # empty: Playwright's own download.
    scraper_browser_contexts: int = 2
    chromium_path: str = ""
    email_backend: EmailBackendName = ""
    resend_api_key: str = ""
    resend_api_url: str = "https://api.resend.com"
    # One budget for every notifier replica (Resend's default team limit is 2 requests/s).
    resend_requests_per_second: float = 2.0
    # The longest wait between two tries of an email while the provider is down or refusing us.
    email_retry_max_seconds: float = 300.0
    # Svix signing secret of the Resend webhook (`whsec_...`); without it the webhook endpoint refuses all.
    resend_webhook_secret: str = ""
    email_from: str = "PickMyClass <alerts@pickmyclass.app>"
    check_interval_seconds: int = 300
    gateway_port: int = 8000
    # The gateway's listening address: loopback unless told otherwise (the image and the cluster say
    # 0.0.0.0, behind their ingress).
    gateway_host: str = "127.0.0.1"
    # Connections each gateway process may open: Redis (sessions, throttles) and PostgreSQL. A request that
    # finds none free within POOL_WAIT_SECONDS gets 503 with Retry-After, never 500.
    redis_max_connections: int = 50
    database_pool_size: int = 10
    pool_wait_seconds: float = 2.0
    # A session unused this long ends (sliding); every session ends after 30 days whatever its use.
    session_idle_seconds: int = 7 * 24 * 3600
    # Live-update streams (SSE): at most this many per student and per gateway process.
    sse_max_per_user: int = 5
    sse_max_connections: int = 2000
    site_url: str = "http://localhost:8000"
    secret_key: str = ""
    # Prefix of every subject, stream, durable consumer and Redis key, so that tests and throwaway
    # systems can share one NATS server and one Redis with a running system.
    namespace: str = "pmc"
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"
    # The workers (scheduler, scraper, detector, notifier) serve /healthz, /readyz and /metrics here;
    # 0: any free port.
    health_port: int = 9100
    # The gateway believes X-Forwarded-For only from these proxies (comma-separated addresses or CIDRs, or
    # "*" when only the ingress can reach the gateway); empty: the peer address is the client.
    trusted_proxies: str = ""
    # For `pmc status`: the services' readiness URLs, `name=url` separated by commas (make run writes them).
    health_urls: str = ""
    # Copies of each JetStream stream: 1 on a single server, 3 on a clustered NATS.
    nats_stream_replicas: int = 1

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={_shown(name, getattr(self, name))!r}" for name in self.__struct_fields__)
        return f"Settings({fields})"

    __str__ = __repr__

    def require_email_backend(self) -> EmailBackendName:
        if not self.email_backend:
            raise SettingsError(
                "no email backend chosen: set RESEND_API_KEY to send through Resend, or EMAIL_BACKEND=outbox "
                "to keep emails in the database for development (shown at /dev/outbox)"
            )
        return self.email_backend

    def require_secret_key(self) -> str:
        if len(self.secret_key) < 16:
            raise SettingsError(
                "SECRET_KEY must be set to at least 16 characters (it signs unsubscribe links)"
            )
        return self.secret_key


_INT_FIELDS = {
    "check_interval_seconds",
    "gateway_port",
    "health_port",
    "nats_stream_replicas",
    "asu_requests_per_minute",
    "asu_breaker_failures",
    "asu_breaker_successes",
    "scraper_browser_contexts",
    "redis_max_connections",
    "database_pool_size",
    "session_idle_seconds",
    "sse_max_per_user",
    "sse_max_connections",
}
_FLOAT_FIELDS = {
    "resend_requests_per_second",
    "email_retry_max_seconds",
    "asu_breaker_cooldown_seconds",
    "asu_api_retry_seconds",
    "pool_wait_seconds",
}
# Each at least this much: (variable, lowest allowed).
_MINIMUMS = (
    ("asu_requests_per_minute", 1),
    ("asu_breaker_failures", 1),
    ("asu_breaker_successes", 1),
    ("scraper_browser_contexts", 1),
    ("asu_breaker_cooldown_seconds", 1),
    ("asu_api_retry_seconds", 1),
    ("redis_max_connections", 2),
    ("database_pool_size", 2),
    ("pool_wait_seconds", 0.1),
    ("session_idle_seconds", 60),
    ("sse_max_per_user", 1),
    ("sse_max_connections", 1),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `environ` (default: the process environment); unknown variables are ignored."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        raw = env.get(name.upper())
        if raw is None or raw == "":
            continue
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise SettingsError(f"{name.upper()} must be an integer, got {raw!r}") from None
        elif name in _FLOAT_FIELDS:
            try:
                values[name] = float(raw)
            except ValueError:
                raise SettingsError(f"{name.upper()} must be a number, got {raw!r}") from None
        else:
            values[name] = raw
    if "email_backend" not in values and values.get("resend_api_key"):
        values["email_backend"] = "resend"
    if "site_url" not in values and "gateway_port" in values:
        values["site_url"] = f"http://localhost:{values['gateway_port']}"
    try:
        settings = msgspec.convert(values, Settings)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from None
    if settings.email_retry_max_seconds <= 0:
        raise SettingsError("EMAIL_RETRY_MAX_SECONDS must be more than 0")
    if settings.resend_requests_per_second <= 0:
        raise SettingsError("RESEND_REQUESTS_PER_SECOND must be more than 0")
    for name, lowest in _MINIMUMS:
        if getattr(settings, name) < lowest:
            raise SettingsError(f"{name.upper()} must be at least {lowest}")
    if settings.check_interval_seconds < 1:
        raise SettingsError("CHECK_INTERVAL_SECONDS must be at least 1")
    if not 0 <= settings.health_port <= 65535:
        raise SettingsError("HEALTH_PORT must be a TCP port (0 to 65535)")
    if settings.nats_stream_replicas not in (1, 3, 5):
        raise SettingsError(
            "NATS_STREAM_REPLICAS must be 1, 3 or 5 (JetStream wants an odd number of copies)"
        )
    if settings.email_backend == "resend" and not settings.resend_api_key:
        raise SettingsError("EMAIL_BACKEND=resend needs RESEND_API_KEY")
    return settings
