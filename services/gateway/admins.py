"""Who is an admin. The gateway owns `app_user`; the operator CLI (`pmc admin`) changes it through here."""

from __future__ import annotations

import asyncpg

SET_ADMIN = "UPDATE app_user SET is_admin = $2 WHERE lower(email) = lower($1) RETURNING email"


async def set_admin(pool: asyncpg.Pool, email: str, admin: bool) -> str | None:
    """Make the account with `email` an admin (or not); its stored address, or None when there is none."""
    stored: str | None = await pool.fetchval(SET_ADMIN, email.strip(), admin)
    return stored
