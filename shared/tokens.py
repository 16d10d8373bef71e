"""Signed, expiring tokens for links in emails: one-click unsubscribe, email verification, password reset.

Format: `<payload>.<expires>.<signature>`, URL-safe; HMAC-SHA256 over purpose, payload and expiry with
SECRET_KEY, so a token for one purpose cannot be replayed for another.

Unsubscribe tokens carry the user id and may be used again. Account tokens carry a nonce the gateway stored
(`account_token`, single use, spent there); the notifier signs it into the emailed link, so the account
stream never holds a usable link: a nonce without SECRET_KEY's signature opens nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class InvalidToken(ValueError):
    pass


class ExpiredToken(InvalidToken):
    """Well-formed and correctly signed, but past its expiry: worth telling apart on a page."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, purpose: str, payload: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{purpose}|{payload}|{expires}".encode(), hashlib.sha256)
    return _b64(mac.digest())


def sign(secret: str, purpose: str, payload: str, ttl_seconds: int, *, now: float | None = None) -> str:
    return sign_until(secret, purpose, payload, (time.time() if now is None else now) + ttl_seconds)


def sign_until(secret: str, purpose: str, payload: str, expires_at: float) -> str:
    """A token valid until `expires_at` (epoch seconds): the same inputs give the same token."""
    expires = int(expires_at)
    encoded = _b64(payload.encode())
    return f"{encoded}.{expires}.{_signature(secret, purpose, payload, expires)}"


def verify(secret: str, purpose: str, token: str, *, now: float | None = None) -> str:
    """Return the payload of a valid, unexpired token for `purpose`; raise InvalidToken otherwise
    (ExpiredToken when only its time is up)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    try:
        encoded, expires_text, signature = token.split(".")
        payload = _unb64(encoded).decode()
        expires = int(expires_text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(signature.encode(), _signature(secret, purpose, payload, expires).encode()):
        raise InvalidToken("bad signature")
    if (time.time() if now is None else now) > expires:
        raise ExpiredToken("expired")
    return payload


# Every token this system issues is far shorter; a longer one is refused before any decoding.
MAX_TOKEN_LENGTH = 512

UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBE_TTL = 60 * 24 * 3600
# "Stop watching this section" in each alert: signs the watch id, lives as long as an unsubscribe link.
STOP_WATCHING = "stop-watching"
STOP_WATCHING_TTL = UNSUBSCRIBE_TTL


def stop_watching_url(secret: str, site_url: str, watch_id: int, *, now: float | None = None) -> str:
    """The link in an alert that ends this one watch (the gateway's `/stop-watching` confirms first)."""
    token = sign(secret, STOP_WATCHING, str(watch_id), STOP_WATCHING_TTL, now=now)
    return f"{site_url.rstrip('/')}/stop-watching?token={token}"


# Account links, by the kind of account email (shared.events.AccountEmailKind) that carries them.
VERIFY_EMAIL = "verify-email"
VERIFY_EMAIL_TTL = 24 * 3600
RESET_PASSWORD = "reset-password"
RESET_PASSWORD_TTL = 3600
ACCOUNT_PURPOSES = {"verify": VERIFY_EMAIL, "reset": RESET_PASSWORD}
ACCOUNT_PATHS = {"verify": "/verify", "reset": "/reset"}


def account_link(secret: str, site_url: str, kind: str, nonce: str, expires_at: float) -> str:
    """`{site}/verify?token=…` or `{site}/reset?token=…`: the stored nonce, signed until it expires."""
    token = sign_until(secret, ACCOUNT_PURPOSES[kind], nonce, expires_at)
    return f"{site_url.rstrip('/')}{ACCOUNT_PATHS[kind]}?token={token}"
