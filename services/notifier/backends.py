"""Where emails go: Resend's batch API in production, the `outbox_email` table in development and tests.

Both backends are idempotent per call: sending the same batch again (same idempotency key, same emails)
delivers nothing new. Three kinds of failure, kept apart because only the first may touch a recipient:
a recipient refused (`Refused`, per email), our request or configuration refused (`ProviderRefused`), the
provider unable to take it now (`ProviderUnavailable`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import httpx
import resend
import structlog
from resend.exceptions import RateLimitError, ResendError

from services.notifier.budget import Budget
from services.notifier.email import Email
from services.notifier.outcomes import Outcome, ProviderRefused, ProviderUnavailable, Refused, Sent
from shared.settings import Settings

__all__ = [
    "EmailBackend",
    "OutboxBackend",
    "Outcome",
    "ProviderRefused",
    "ProviderUnavailable",
    "Refused",
    "ResendBackend",
    "Sent",
    "create_backend",
]

log = structlog.get_logger()

MAX_BATCH = 100
MAX_IDEMPOTENCY_KEY = 256
# A 429 is waited out (as the provider's headers say) and the request repeated, this many tries in all.
RATE_LIMIT_ATTEMPTS = 5

# Resend answers 409 `concurrent_idempotent_requests` while an earlier request with the same key is still
# running: retrying later is exactly right. Any other 409 means the key was reused for different emails.
_TRANSIENT_TYPES = frozenset({"concurrent_idempotent_requests", "HttpClientError"})


class EmailBackend(Protocol):
    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[Outcome]:
        """Send up to 100 emails; one outcome per email, in order. Raises ProviderUnavailable or
        ProviderRefused when the request as a whole was not taken."""
        ...

    async def aclose(self) -> None: ...


def _check_batch(emails: Sequence[Email], idempotency_key: str) -> None:
    if len(emails) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} emails, got {len(emails)}")
    if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")


def _status(error: ResendError) -> int:
    try:
        return int(error.code)
    except (TypeError, ValueError):
        return 500


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Resend's rate-limit answer: `retry-after` (seconds), else `ratelimit-reset` (seconds)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("retry-after", "ratelimit-reset"):
        try:
            return max(0.0, float(lowered[name]))
        except (KeyError, ValueError):
            continue
    return None


def classify(error: ResendError) -> ProviderUnavailable | ProviderRefused:
    """A request-level failure: worth retrying as it is, or a refusal of our request or configuration.
    Never a recipient's fault: those come back per email in permissive batch validation."""
    status = _status(error)
    summary = f"resend {status} {error.error_type}: {error.message}"
    if isinstance(error, RateLimitError) or status == 429:
        return ProviderUnavailable(summary, _retry_after(error.headers))
    if status >= 500 or error.error_type in _TRANSIENT_TYPES:
        return ProviderUnavailable(summary, _retry_after(error.headers))
    return ProviderRefused(summary)


class ResendBackend:
    """Resend's batch endpoint through the official SDK's async (httpx) client, in permissive validation
    mode (a bad address is refused alone, by its index), within the request budget shared by every
    notifier replica.

    The SDK reads its key and base URL from module globals on every request, so one process talks to one
    Resend account: the constructor sets them.
    """

    def __init__(self, api_key: str, api_url: str = "https://api.resend.com", *, budget: Budget) -> None:
        if not api_key:
            raise ValueError("ResendBackend needs an API key")
        if resend.default_async_http_client is None:
            raise RuntimeError("resend has no async HTTP client: install resend[async] (httpx)")
        resend.api_key = api_key
        resend.api_url = api_url.rstrip("/")
        self._budget = budget

    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[Outcome]:
        _check_batch(emails, idempotency_key)
        if not emails:
            return []
        params: list[resend.Emails.SendParams] = [
            {
                "from": email.sender,
                "to": [email.to],
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
                "headers": dict(email.headers),
            }
            for email in emails
        ]
        options: resend.Batch.SendOptions = {
            "idempotency_key": idempotency_key,
            "batch_validation": "permissive",
        }
        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            await (self._budget.take() if attempt == 1 else self._budget.retake())
            try:
                response = await resend.Batch.send_async(params, options=options)
                break
            except ResendError as exc:
                error = classify(exc)
                if _status(exc) == 429 and attempt < RATE_LIMIT_ATTEMPTS:
                    # Over the limit anyway (another sender, clock skew at a window's edge): everyone
                    # waits what the provider said, then the same request goes again under the same key.
                    await self._budget.hold(_retry_after(exc.headers))
                    continue
                log.warning(
                    "resend batch failed",
                    count=len(emails),
                    idempotency_key=idempotency_key,
                    error=str(error),
                )
                raise error from exc
            except (httpx.HTTPError, OSError) as exc:
                raise ProviderUnavailable(f"resend unreachable: {type(exc).__name__}: {exc}") from exc
        outcomes = _outcomes(len(emails), response)
        log.info(
            "resend batch sent",
            sent=sum(isinstance(outcome, Sent) for outcome in outcomes),
            refused=sum(isinstance(outcome, Refused) for outcome in outcomes),
            idempotency_key=idempotency_key,
        )
        return outcomes

    async def aclose(self) -> None:
        # The SDK opens one httpx client per request: only the budget's connection is ours.
        await self._budget.aclose()


def _outcomes(count: int, response: Mapping[str, Any]) -> list[Outcome]:
    """Permissive mode: `data` holds the ids of the accepted emails in order, `errors` the refused ones by
    index."""
    refused: dict[int, str] = {}
    for error in response.get("errors") or []:
        index = error.get("index")
        if isinstance(index, int) and 0 <= index < count:
            refused[index] = str(error.get("message") or "refused")
    ids = iter(item["id"] for item in response.get("data") or [])
    outcomes: list[Outcome] = []
    for index in range(count):
        if index in refused:
            outcomes.append(Refused(refused[index]))
            continue
        provider_id = next(ids, None)
        if provider_id is None:
            raise ProviderUnavailable(f"resend answered {count - len(refused)} emails with fewer ids")
        outcomes.append(Sent(provider_id))
    return outcomes


class OutboxBackend:
    """Stores emails in `outbox_email` instead of sending them; the row id is the email's idempotency id."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[Outcome]:
        _check_batch(emails, idempotency_key)
        rows = [
            (email.idempotency_id, email.to, email.subject, email.text, email.html, json.dumps(email.headers))
            for email in emails
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO outbox_email (id, to_addr, subject, text_body, html_body, headers)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (id) DO NOTHING",
                rows,
            )
        log.info("outbox batch stored", count=len(rows), idempotency_key=idempotency_key)
        return [Sent(email.idempotency_id) for email in emails]

    async def aclose(self) -> None:
        """The pool belongs to the caller."""


def create_backend(settings: Settings, pool: asyncpg.Pool) -> EmailBackend:
    """The configured backend; every Resend backend of every replica draws on one request budget."""
    if settings.require_email_backend() == "resend":
        budget = Budget(settings.redis_url, settings.namespace, settings.resend_requests_per_second)
        return ResendBackend(settings.resend_api_key, settings.resend_api_url, budget=budget)
    return OutboxBackend(pool)
