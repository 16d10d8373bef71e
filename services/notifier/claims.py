"""Claims: the right to send one email for (watch, kind, change), taken in Postgres before sending.

A claim is inserted before the send and marked sent after the provider accepted it. A parallel or retried
worker cannot claim it again, except that an unsent claim older than the lease is taken over: its sender
died between claiming and sending, or gave it back after a failed send. The lease is shorter than the
consumer's ack wait, so the redelivery that follows a crash always finds the dead sender's claims expired.

Before the provider is called, each claimed email is rendered and stored with the key of its provider
batch (write-ahead). A claim that already has a batch is never re-batched: whoever takes it over adopts
the whole batch and sends the stored emails under the stored key, so the provider recognises a repeat of
a request it may have accepted (a crash, a timeout) instead of delivering it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg
import msgspec

from services.notifier.email import Email


class ClaimKey(NamedTuple):
    watch_id: int
    kind: str
    change_key: str


class Owned(NamedTuple):
    key: ClaimKey
    # The batch this email was already assigned to by an earlier attempt, if any.
    batch_key: str | None


class Stored(NamedTuple):
    key: ClaimKey
    user_id: int
    email: Email


class Batch(NamedTuple):
    """One provider request: its idempotency key and its emails, in the stored order."""

    key: str
    items: list[Stored]


CLAIM = """
INSERT INTO notification AS n (watch_id, kind, change_key)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
ON CONFLICT (watch_id, kind, change_key) DO UPDATE SET claimed_at = now()
    WHERE n.sent_at IS NULL AND n.refused_at IS NULL AND n.claimed_at < now() - make_interval(secs => $4)
RETURNING watch_id, kind, change_key, batch_key
"""

# Only rows still unbatched and unsent: a row batched by someone else meanwhile keeps its batch.
ASSIGN = """
UPDATE notification AS n SET batch_key = a.batch_key, email = a.email::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
    AS a(watch_id, kind, change_key, batch_key, email)
WHERE n.watch_id = a.watch_id AND n.kind = a.kind AND n.change_key = a.change_key
  AND n.batch_key IS NULL AND n.sent_at IS NULL
RETURNING n.watch_id, n.kind, n.change_key
"""

# The whole of each batch, claimed afresh: a batch goes out as one request or not at all.
ADOPT = """
UPDATE notification AS n SET claimed_at = now()
FROM watch AS w
WHERE n.batch_key = ANY($1::text[]) AND n.sent_at IS NULL AND n.refused_at IS NULL AND w.id = n.watch_id
RETURNING n.watch_id, n.kind, n.change_key, n.batch_key, n.email::text AS email, w.user_id
"""

MARK_SENT = """
UPDATE notification AS n SET sent_at = now(), provider_id = s.provider_id
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS s(watch_id, kind, change_key, provider_id)
WHERE n.watch_id = s.watch_id AND n.kind = s.kind AND n.change_key = s.change_key
"""

MARK_REFUSED = """
UPDATE notification AS n SET refused_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(watch_id, kind, change_key)
WHERE n.watch_id = r.watch_id AND n.kind = r.kind AND n.change_key = r.change_key AND n.sent_at IS NULL
"""

# Giving back claims whose send failed: the watcher must not stay silenced by a send that never happened.
# Unbatched claims go; batched ones stay (the provider may have taken the request before failing) with
# their lease expired, so the next attempt adopts and repeats exactly that batch.
RELEASE = """
WITH given AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(watch_id, kind, change_key)
), dropped AS (
    DELETE FROM notification AS n USING given AS g
    WHERE n.watch_id = g.watch_id AND n.kind = g.kind AND n.change_key = g.change_key
      AND n.sent_at IS NULL AND n.batch_key IS NULL
)
UPDATE notification AS n SET claimed_at = 'epoch'
FROM given AS g
WHERE n.watch_id = g.watch_id AND n.kind = g.kind AND n.change_key = g.change_key
  AND n.sent_at IS NULL AND n.refused_at IS NULL AND n.batch_key IS NOT NULL
"""

UNSENT = """
SELECT n.watch_id, n.kind, n.change_key
FROM notification AS n
JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(watch_id, kind, change_key)
  ON n.watch_id = k.watch_id AND n.kind = k.kind AND n.change_key = k.change_key
WHERE n.sent_at IS NULL AND n.refused_at IS NULL
"""

# The provider refused the address itself (named it): stop mailing it until the user changes it.
REJECT_ADDRESS = "UPDATE app_user SET email_status = 'rejected' WHERE id = $1"


def _columns(keys: Sequence[ClaimKey]) -> tuple[list[int], list[str], list[str]]:
    return [k.watch_id for k in keys], [k.kind for k in keys], [k.change_key for k in keys]


def _key(row: asyncpg.Record) -> ClaimKey:
    return ClaimKey(row["watch_id"], row["kind"], row["change_key"])


async def claim(pool: asyncpg.Pool, keys: list[ClaimKey], lease_seconds: float) -> list[Owned]:
    """Claim what nobody holds; returns what this caller now owns, with any batch it already has."""
    if not keys:
        return []
    rows = await pool.fetch(CLAIM, *_columns(keys), lease_seconds)
    return [Owned(_key(row), row["batch_key"]) for row in rows]


async def assign(pool: asyncpg.Pool, batches: Sequence[Batch]) -> set[ClaimKey]:
    """Store each email with its batch before sending; returns the keys stored (a key another sender
    batched meanwhile is left to that batch)."""
    items = [(batch.key, item) for batch in batches for item in batch.items]
    if not items:
        return set()
    keys = [item.key for _, item in items]
    rows = await pool.fetch(
        ASSIGN,
        *_columns(keys),
        [batch_key for batch_key, _ in items],
        [msgspec.json.encode(item.email).decode() for _, item in items],
    )
    return {_key(row) for row in rows}


async def adopt(pool: asyncpg.Pool, batch_keys: set[str]) -> list[Batch]:
    """Claim the whole of these stored batches; each comes back with its emails in a stable order."""
    if not batch_keys:
        return []
    rows = await pool.fetch(ADOPT, sorted(batch_keys))
    batches: dict[str, list[Stored]] = {}
    for row in rows:
        email = msgspec.json.decode(row["email"], type=Email)
        batches.setdefault(row["batch_key"], []).append(Stored(_key(row), row["user_id"], email))
    return [Batch(key, sorted(items)) for key, items in sorted(batches.items())]


async def mark_sent(pool: asyncpg.Pool, sent: list[tuple[ClaimKey, str]]) -> None:
    if sent:
        keys = [key for key, _ in sent]
        await pool.execute(MARK_SENT, *_columns(keys), [provider_id for _, provider_id in sent])


async def mark_refused(pool: asyncpg.Pool, keys: list[ClaimKey]) -> None:
    if keys:
        await pool.execute(MARK_REFUSED, *_columns(keys))


async def release(pool: asyncpg.Pool, keys: list[ClaimKey]) -> None:
    if keys:
        await pool.execute(RELEASE, *_columns(keys))


async def unsent(pool: asyncpg.Pool, keys: list[ClaimKey]) -> set[ClaimKey]:
    """Which of `keys` are claimed and neither sent nor refused (by anyone)."""
    if not keys:
        return set()
    rows = await pool.fetch(UNSENT, *_columns(keys))
    return {_key(row) for row in rows}


async def reject_address(pool: asyncpg.Pool, user_id: int) -> None:
    await pool.execute(REJECT_ADDRESS, user_id)
