"""Signed, expiring tokens for links in emails (one-click unsubscribe).

Format: `<payload>.<expires>.<signature>`, URL-safe; HMAC-SHA256 over purpose, payload and expiry with
SECRET_KEY, so a token for one purpose cannot be replayed for another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class InvalidToken(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, purpose: str, payload: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{purpose}|{payload}|{expires}".encode(), hashlib.sha256)
    return _b64(mac.digest())


def sign(secret: str, purpose: str, payload: str, ttl_seconds: int, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_seconds)
    encoded = _b64(payload.encode())
    return f"{encoded}.{expires}.{_signature(secret, purpose, payload, expires)}"


def verify(secret: str, purpose: str, token: str, *, now: float | None = None) -> str:
    """Return the payload of a valid, unexpired token for `purpose`; raise InvalidToken otherwise."""
    try:
        encoded, expires_text, signature = token.split(".")
        payload = _unb64(encoded).decode()
        expires = int(expires_text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(signature.encode(), _signature(secret, purpose, payload, expires).encode()):
        raise InvalidToken("bad signature")
    if (time.time() if now is None else now) > expires:
        raise InvalidToken("expired")
    return payload


UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBE_TTL = 60 * 24 * 3600
