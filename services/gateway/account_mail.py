"""What the gateway does to have an account email sent: store a single-use token, publish.

The notifier sends every email. The gateway stores a token (only the SHA-256 of its nonce) and publishes an
`AccountEmail` naming the nonce; the notifier signs the nonce with SECRET_KEY into the link. The email is
published before the token's transaction commits, so a stored token always has its email on the way; if
the publish fails, nothing is stored and the student asks again.

How often anyone may ask, and how many emails an address gets, is `services/gateway/throttle.py`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from nats.js import JetStreamContext

from shared.events import AccountEmail, encode
from shared.streams import Topology

log = structlog.get_logger()

# The kinds of account email that carry a link, and so a token.
TokenPurpose = Literal["verify", "reset"]
Conn = asyncpg.Connection | PoolConnectionProxy

TOKEN_TTL: dict[TokenPurpose, int] = {"verify": 24 * 3600, "reset": 3600}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def nonce_hash(nonce: str) -> bytes:
    return hashlib.sha256(nonce.encode()).digest()


INSERT_TOKEN = """
INSERT INTO account_token (user_id, purpose, nonce_hash, expires_at)
VALUES ($1, $2, $3, to_timestamp($4))
"""
# Tokens whose link expired a day ago can no longer be named by anyone (the signature expired too).
DELETE_OLD_TOKENS = "DELETE FROM account_token WHERE user_id = $1 AND expires_at < now() - interval '1 day'"


async def publish(js: JetStreamContext, topology: Topology, event: AccountEmail) -> None:
    # The message id is what the email is: a retried publish of the same request is stored once. It is
    # logged with every retry, so it names the nonce by its digest.
    what = digest(event.nonce)[:32] if event.nonce else str(int(event.requested_at * 1000))
    msg_id = f"account:{event.kind}:{event.user_id}:{what}"
    await js.publish(topology.account_subject(event.kind), encode(event), headers={"Nats-Msg-Id": msg_id})


async def issue_link(conn: Conn, *, kind: TokenPurpose, user_id: int, to: str) -> AccountEmail:
    """Store a fresh single-use token for `user_id`; the email carrying its link, to `send` once the
    caller's transaction has committed: a link sent first could be opened (by a scanner, a fast student,
    a test) before its token is visible, and would read as used or invalid. A send that fails afterwards
    leaves a token nobody can name (it expires); the student asks again."""
    now = time.time()
    nonce = secrets.token_urlsafe(32)
    expires_at = now + TOKEN_TTL[kind]
    await conn.execute(DELETE_OLD_TOKENS, user_id)
    await conn.execute(INSERT_TOKEN, user_id, kind, nonce_hash(nonce), expires_at)
    return AccountEmail(
        kind=kind,
        user_id=user_id,
        to=to,
        nonce=nonce,
        expires_at=expires_at,
        requested_at=now,
    )


async def send(js: JetStreamContext, topology: Topology, event: AccountEmail) -> None:
    """Ask the notifier for the email of an issued link."""
    await publish(js, topology, event)
    log.info("account email requested", kind=event.kind, user_id=event.user_id)


async def send_notice(js: JetStreamContext, topology: Topology, *, user_id: int, to: str) -> None:
    """Tell the owner of `to` that someone tried to register it again (no token: nothing to click)."""
    event = AccountEmail(kind="already_registered", user_id=user_id, to=to, requested_at=time.time())
    await publish(js, topology, event)
    log.info("account email requested", kind="already_registered", user_id=user_id)


@dataclass(frozen=True)
class Spent:
    user_id: int


@dataclass(frozen=True)
class Unusable:
    """Why a token cannot be used: `invalid` (never issued, or not for this), `used` or `expired`."""

    reason: str


SPEND_TOKEN = """
UPDATE account_token SET used_at = now()
WHERE nonce_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
RETURNING user_id
"""
TOKEN_STATE = (
    "SELECT used_at, expires_at > now() AS live FROM account_token WHERE nonce_hash = $1 AND purpose = $2"
)


async def token_state(
    conn: Conn | asyncpg.Pool,
    purpose: TokenPurpose,
    nonce: str,
) -> Unusable | None:
    """Why the token cannot be used, or None while it can (read only: showing a form spends nothing)."""
    row = await conn.fetchrow(TOKEN_STATE, nonce_hash(nonce), purpose)
    if row is None:
        return Unusable("invalid")
    if row["used_at"] is not None:
        return Unusable("used")
    if not row["live"]:
        return Unusable("expired")
    return None


async def spend_token(
    conn: Conn,
    purpose: TokenPurpose,
    nonce: str,
) -> Spent | Unusable:
    """Use the token once: one statement marks it used only if it is unused and unexpired, so two
    concurrent requests with the same link cannot both succeed."""
    user_id = await conn.fetchval(SPEND_TOKEN, nonce_hash(nonce), purpose)
    if user_id is not None:
        return Spent(int(user_id))
    return await token_state(conn, purpose, nonce) or Unusable("used")
