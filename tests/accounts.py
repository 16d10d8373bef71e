"""Accounts for gateway tests: register, then follow the verification link the gateway asked to be emailed.

The link is built from the `AccountEmail` in the account stream exactly as the notifier builds it, so these
tests need no notifier; `tests/integration/test_accounts.py` drives the notifier's handler itself. The
gateway asks for the email after its answer is sent: `next_account_email` waits for it on the stream.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
from nats.js import JetStreamContext

from shared.events import AccountEmail, AccountEmailKind, decode
from shared.settings import Settings
from shared.streams import Topology
from shared.tokens import account_link
from tests.jetstream import stream_events

PASSWORD = "correct horse battery"


async def account_emails(
    js: JetStreamContext, topology: Topology, to: str | None = None
) -> list[AccountEmail]:
    """Every account email the gateway asked for (to `to`, if given), oldest first."""
    return [
        event
        for _, event in await stream_events(js, topology.account_stream, AccountEmail)
        if to is None or event.to.lower() == to.lower()
    ]


async def next_account_email(
    js: JetStreamContext,
    topology: Topology,
    to: str,
    kind: AccountEmailKind,
    after: float,
    within: float = 10.0,
) -> AccountEmail:
    """The first email of `kind` to `to` asked for at or after `after`, as soon as it is in the stream."""
    subscription = await js.subscribe(topology.account_subject(kind), ordered_consumer=True)
    try:
        async with asyncio.timeout(within):
            while True:
                msg = await subscription.next_msg(timeout=within)
                event = decode(msg.data, AccountEmail)
                if event.to.lower() == to.lower() and event.requested_at >= after:
                    return event
    finally:
        await subscription.unsubscribe()


def link_path(settings: Settings, event: AccountEmail) -> str:
    """The path and query of the link in `event`'s email, for a client with a base URL."""
    parts = urlsplit(
        account_link(settings.secret_key, settings.site_url, event.kind, event.nonce, event.expires_at)
    )
    return f"{parts.path}?{parts.query}"


async def sign_up(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    topology: Topology,
    settings: Settings,
    email: str,
    password: str = PASSWORD,
) -> int:
    """Register `email`, follow its verification link with `client` (which keeps the session cookie), and
    return the user id."""
    asked = time.time()
    response = await client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 202, response.text
    event = await next_account_email(js, topology, email, "verify", after=asked)
    verified = await client.get(link_path(settings, event), follow_redirects=False)
    assert verified.status_code == 303, verified.text
    assert verified.headers["location"] == "/?verified=1"
    return event.user_id
