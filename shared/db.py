"""PostgreSQL: the connection pool and the plain-SQL migrations under `shared/migrations/`.

Migrations are applied in file-name order, each in its own transaction, and recorded in
`schema_migration`; an advisory lock makes concurrent setup runs (two deploy jobs) wait, not collide.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger()

_MIGRATION_LOCK = 7_341_020_931  # arbitrary, fixed: the advisory lock that serialises migrations

Pool = asyncpg.Pool


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("shared") / "migrations"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text(encoding="utf-8")) for name in names]


async def migrate(conn: asyncpg.Connection | PoolConnectionProxy) -> list[str]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migration")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migration (version) VALUES ($1)", version)
            log.info("migration applied", version=version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


def with_database(database_url: str, database: str) -> str:
    """`database_url` pointing at another database on the same server."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/") or "postgres"


async def ensure_database(database_url: str) -> bool:
    """Create the database named in `database_url` if it is missing (development convenience).

    Returns True when it was created. Needs a role allowed to CREATE DATABASE; production databases
    are provisioned by the operator and already exist.
    """
    name = database_name(database_url)
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin = await asyncpg.connect(with_database(database_url, "postgres"))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    log.info("database created", database=name)
    return True
