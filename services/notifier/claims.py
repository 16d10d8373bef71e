"""Claims: the right to send one email for (watch, kind, change), taken in Postgres before sending.

A claim is inserted before the send and marked sent after the provider accepted it. A parallel or retried
worker cannot claim it again, except that an unsent claim older than the lease is taken over: its sender
died between claiming and sending. The lease is shorter than the consumer's ack wait, so the redelivery
that follows a crash always finds the dead sender's claims expired.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg


class ClaimKey(NamedTuple):
    watch_id: int
    kind: str
    change_key: str


CLAIM = """
INSERT INTO notification AS n (watch_id, kind, change_key)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
ON CONFLICT (watch_id, kind, change_key) DO UPDATE SET claimed_at = now()
    WHERE n.sent_at IS NULL AND n.claimed_at < now() - make_interval(secs => $4)
RETURNING watch_id, kind, change_key
"""

MARK_SENT = """
UPDATE notification AS n SET sent_at = now(), provider_id = s.provider_id
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS s(watch_id, kind, change_key, provider_id)
WHERE n.watch_id = s.watch_id AND n.kind = s.kind AND n.change_key = s.change_key
"""

# Releasing a claim whose send failed: the watcher must not stay silenced by a send that never happened.
RELEASE = """
DELETE FROM notification AS n
USING unnest($1::bigint[], $2::text[], $3::text[]) AS r(watch_id, kind, change_key)
WHERE n.watch_id = r.watch_id AND n.kind = r.kind AND n.change_key = r.change_key AND n.sent_at IS NULL
"""


UNSENT = """
SELECT n.watch_id, n.kind, n.change_key
FROM notification AS n
JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(watch_id, kind, change_key)
  ON n.watch_id = k.watch_id AND n.kind = k.kind AND n.change_key = k.change_key
WHERE n.sent_at IS NULL
"""

# The provider refused the address itself: stop mailing it until the user changes it.
REJECT_ADDRESS = "UPDATE app_user SET email_status = 'rejected' WHERE id = $1"


def _columns(keys: list[ClaimKey]) -> tuple[list[int], list[str], list[str]]:
    return [k.watch_id for k in keys], [k.kind for k in keys], [k.change_key for k in keys]


async def claim(pool: asyncpg.Pool, keys: list[ClaimKey], lease_seconds: float) -> set[ClaimKey]:
    """Claim what nobody holds; returns the keys this caller now owns."""
    if not keys:
        return set()
    rows = await pool.fetch(CLAIM, *_columns(keys), lease_seconds)
    return {ClaimKey(row["watch_id"], row["kind"], row["change_key"]) for row in rows}


async def mark_sent(pool: asyncpg.Pool, sent: list[tuple[ClaimKey, str]]) -> None:
    if sent:
        keys = [key for key, _ in sent]
        await pool.execute(MARK_SENT, *_columns(keys), [provider_id for _, provider_id in sent])


async def release(pool: asyncpg.Pool, keys: list[ClaimKey]) -> None:
    if keys:
        await pool.execute(RELEASE, *_columns(keys))


async def unsent(pool: asyncpg.Pool, keys: list[ClaimKey]) -> set[ClaimKey]:
    """Which of `keys` are claimed and not yet sent (by anyone)."""
    if not keys:
        return set()
    rows = await pool.fetch(UNSENT, *_columns(keys))
    return {ClaimKey(row["watch_id"], row["kind"], row["change_key"]) for row in rows}


async def reject_address(pool: asyncpg.Pool, user_id: int) -> None:
    await pool.execute(REJECT_ADDRESS, user_id)
