"""Resend webhooks as Resend sends them, for tests and development; never part of a production image.

Builds the real wire format (`{"type": "email.delivered", "created_at": ..., "data": {"email_id", "to",
...}}`), signs it as Svix does (with the Standard Webhooks library, the scheme Svix implements), and
POSTs it with the `svix-id`, `svix-timestamp` and `svix-signature` headers.

    python -m devtools.resend_webhooks --type email.bounced --email-id <id> --to sparky@asu.edu \\
        [--url http://localhost:8000/api/v1/webhooks/resend]    # secret: RESEND_WEBHOOK_SECRET
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import standardwebhooks

PATH = "/api/v1/webhooks/resend"

Json = dict[str, Any]


def new_secret() -> str:
    """A fresh signing secret in Resend's format (`whsec_` + base64 of 24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `svix-signature` header value (`v1,<base64 HMAC-SHA256>`) for this id, timestamp and body,
    from the Standard Webhooks library (the scheme Svix and so Resend use)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    # The scheme signs text; a body that is not UTF-8 (a hostile test) is refused before any check anyway.
    text = body.decode("utf-8", errors="replace")
    signature: str = standardwebhooks.Webhook(secret).sign(msg_id, moment, text)
    return signature


def signed_headers(
    secret: str, body: bytes, *, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or new_msg_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": sign(secret, msg_id, timestamp, body),
    }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def email_event(
    event_type: str,
    email_id: str,
    to: list[str],
    *,
    bounce_type: str | None = None,
    created_at: float | None = None,
    subject: str = "Seat available: CSE 310 (12345)",
) -> Json:
    """A Resend email event as it arrives. `bounce_type` (`Permanent`, `Transient`, ...) adds the
    `data.bounce` object that `email.bounced` carries."""
    moment = time.time() if created_at is None else created_at
    data: Json = {
        "created_at": _iso(moment - 1),
        "email_id": email_id,
        "from": "PickMyClass <alerts@pickmyclass.app>",
        "to": to,
        "subject": subject,
    }
    if bounce_type is not None:
        sub_type = "General" if bounce_type == "Permanent" else "MailboxFull"
        data["bounce"] = {
            "message": "The recipient's server refused it.",
            "subType": sub_type,
            "type": bounce_type,
        }
    return {"type": event_type, "created_at": _iso(moment), "data": data}


async def deliver(
    url: str,
    payload: Json | bytes,
    secret: str,
    *,
    client: httpx.AsyncClient | None = None,
    msg_id: str | None = None,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST one signed webhook to `url` (with `client`, e.g. a Litestar test client, or a fresh one).
    `headers` override the signed ones, to send something broken on purpose."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = signed_headers(secret, body, msg_id=msg_id, timestamp=timestamp) | (headers or {})
    if client is not None:
        return await client.post(url, content=body, headers=sent)
    async with httpx.AsyncClient(timeout=10) as fresh:
        return await fresh.post(url, content=body, headers=sent)


def main() -> None:
    parser = argparse.ArgumentParser(description="Send one signed Resend webhook (development only).")
    parser.add_argument("--url", default=f"http://localhost:8000{PATH}")
    parser.add_argument(
        "--type", default="email.delivered", help="email.delivered, email.bounced, email.complained, ..."
    )
    parser.add_argument("--email-id", required=True, help="the provider id of a sent email")
    parser.add_argument("--to", action="append", default=[], help="recipient address (repeatable)")
    parser.add_argument("--bounce-type", default=None, help="Permanent or Transient (email.bounced)")
    args = parser.parse_args()
    secret = os.environ.get("RESEND_WEBHOOK_SECRET", "")
    if not secret:
        sys.exit("set RESEND_WEBHOOK_SECRET to the gateway's webhook secret")
    bounce_type = args.bounce_type or ("Permanent" if args.type == "email.bounced" else None)
    payload = email_event(args.type, args.email_id, args.to, bounce_type=bounce_type)
    response = asyncio.run(deliver(args.url, payload, secret))
    print(response.status_code, response.text)


if __name__ == "__main__":
    main()
