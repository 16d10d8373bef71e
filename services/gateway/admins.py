"""Who is an admin, and who is disabled. The gateway owns `app_user`; the operator CLI (`pmc admin`) makes
admins through here, never the API: no request can make anyone an admin."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.gateway.emails import canonical

Db = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

# By the address's canonical form, as log-in finds accounts (services/gateway/emails.py, migration 0009).
SET_ADMIN = "UPDATE app_user SET is_admin = $2 WHERE email_canonical = $1 RETURNING email"
# A disabled admin is no admin: disabling takes every right with it.
IS_ADMIN = "SELECT is_admin AND disabled_at IS NULL FROM app_user WHERE id = $1"
IS_DISABLED = "SELECT disabled_at IS NOT NULL FROM app_user WHERE id = $1"
# What a disabled student is told at log-in, once the password was right (so it tells a stranger nothing).
DISABLED_MESSAGE = "this account is disabled: write to the PickMyClass team if you think this is a mistake"


async def set_admin(pool: asyncpg.Pool, email: str, admin: bool) -> str | None:
    """Make the account with `email` an admin (or not); its stored address, or None when there is none."""
    # NUL is in no address, and PostgreSQL refuses it in text.
    if "\x00" in email:
        return None
    stored: str | None = await pool.fetchval(SET_ADMIN, canonical(email), admin)
    return stored


async def is_admin(db: Db, user_id: int) -> bool:
    return bool(await db.fetchval(IS_ADMIN, user_id))


async def is_disabled(db: Db, user_id: int) -> bool:
    """Whether an admin disabled the account (False for an account that does not exist)."""
    return bool(await db.fetchval(IS_DISABLED, user_id))
