"""Where emails go: Resend's batch API in production, the `outbox_email` table in development and tests.

Both backends are idempotent per call: sending the same batch again (same idempotency key, same emails)
delivers nothing new. Failures are split into worth-retrying (`TransientSendError`) and not
(`PermanentSendError`) so the caller can choose between a delayed retry and a dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import resend
import structlog
from resend.exceptions import RateLimitError, ResendError

from services.notifier.email import Email
from shared.settings import Settings

log = structlog.get_logger()

MAX_BATCH = 100
MAX_IDEMPOTENCY_KEY = 256

# Resend answers 409 `concurrent_idempotent_requests` while an earlier request with the same key is still
# running: retrying later is exactly right. Any other 409 means the key was reused for different emails.
_TRANSIENT_TYPES = frozenset({"concurrent_idempotent_requests", "HttpClientError"})


class TransientSendError(Exception):
    """The provider may accept the same batch later (rate limit, outage, network)."""


class PermanentSendError(Exception):
    """Retrying the same batch cannot succeed (bad key, invalid email, reused idempotency key)."""


class EmailBackend(Protocol):
    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[str]:
        """Send up to 100 emails; returns the provider's message ids in the same order."""
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


def _classify(error: ResendError) -> TransientSendError | PermanentSendError:
    status = _status(error)
    summary = f"resend {status} {error.error_type}: {error.message}"
    # A refused API key is the operator's to fix: retry (and dead-letter in the end) rather than drop
    # the emails. Only what is wrong with the emails themselves is permanent.
    if (
        isinstance(error, RateLimitError)
        or status in (401, 403, 429)
        or status >= 500
        or error.error_type in _TRANSIENT_TYPES
    ):
        return TransientSendError(summary)
    return PermanentSendError(summary)


class ResendBackend:
    """Resend's batch endpoint through the official SDK's async (httpx) client.

    The SDK reads its key and base URL from module globals on every request, so one process talks to one
    Resend account: the constructor sets them.
    """

    def __init__(self, api_key: str, api_url: str = "https://api.resend.com") -> None:
        if not api_key:
            raise ValueError("ResendBackend needs an API key")
        if resend.default_async_http_client is None:
            raise RuntimeError("resend has no async HTTP client: install resend[async] (httpx)")
        resend.api_key = api_key
        resend.api_url = api_url.rstrip("/")

    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[str]:
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
        try:
            response = await resend.Batch.send_async(params, options={"idempotency_key": idempotency_key})
        except ResendError as exc:
            error = _classify(exc)
            log.warning(
                "resend batch failed", count=len(emails), idempotency_key=idempotency_key, error=str(error)
            )
            raise error from exc
        ids = [item["id"] for item in response["data"]]
        if len(ids) != len(emails):
            raise PermanentSendError(f"resend returned {len(ids)} ids for {len(emails)} emails")
        log.info("resend batch sent", count=len(ids), idempotency_key=idempotency_key)
        return ids

    async def aclose(self) -> None:
        """Nothing to release: the SDK opens one httpx client per request."""


class OutboxBackend:
    """Stores emails in `outbox_email` instead of sending them; the row id is the email's idempotency id."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def send_batch(self, emails: Sequence[Email], idempotency_key: str) -> list[str]:
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
        return [email.idempotency_id for email in emails]

    async def aclose(self) -> None:
        """The pool belongs to the caller."""


def create_backend(settings: Settings, pool: asyncpg.Pool) -> EmailBackend:
    if settings.email_backend == "resend":
        return ResendBackend(settings.resend_api_key, settings.resend_api_url)
    return OutboxBackend(pool)
