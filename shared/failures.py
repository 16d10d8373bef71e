"""One clear line for the failures a service or the operator CLI meets at start: never a traceback."""

from __future__ import annotations

import asyncpg
from nats.errors import NoServersError

from shared.db import database_name


def explain(exc: BaseException, *, database_url: str = "") -> str:
    """What went wrong and, where we know it, what to do about it."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        name = database_name(database_url) if database_url else "the configured database"
        return (
            f"database {name!r} does not exist: run `python -m shared.setup` (make run does), or point "
            "DATABASE_URL at the right server (make run writes the URLs it uses to .data/env)"
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"{exc}: the database is not migrated; run `python -m shared.setup`"
    if isinstance(exc, NoServersError):
        return "no NATS server answers at NATS_URL (start one, or `source .data/env` from make run)"
    if isinstance(exc, ConnectionRefusedError | TimeoutError):
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"a server did not answer ({what}); check NATS_URL, DATABASE_URL and REDIS_URL"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
