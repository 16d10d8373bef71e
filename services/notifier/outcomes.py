"""What the email provider made of a request: per email, or for the request as a whole."""

from __future__ import annotations

from typing import NamedTuple


class Sent(NamedTuple):
    """The provider accepted this email; `id` is its id for webhooks (`notification.provider_id`)."""

    id: str


class Refused(NamedTuple):
    """The provider refused this one recipient (and named it): only this address may be marked."""

    reason: str


Outcome = Sent | Refused


class ProviderUnavailable(Exception):
    """The provider cannot take the request now (5xx, timeout, rate limit, a key still in flight): the same
    request may succeed later. `retry_after` is the provider's own hint, in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRefused(Exception):
    """The provider refuses our request itself (API key, sender, domain, payload): our configuration is
    at fault, not any recipient. Nothing may be marked; sending resumes when the provider accepts again."""
