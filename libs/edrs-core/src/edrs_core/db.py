"""A service's own PostgreSQL database: created if absent, versioned SQL migrations applied at start-up."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from edrs_events.pg import Connection

log = logging.getLogger("edrs.db")

# Migration files are named `0001_create_personas.sql`: a version number, then a description.
_MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# One lock id for every service's migration runner; each service has its own database, so
# the lock only serialises replicas of the same service starting at once.
_MIGRATION_LOCK = 0x6564_7273  # "edrs"


class MigrationError(Exception):
    """The migrations on disk and the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Traversable) -> list[Migration]:
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file name '{entry.name}' is not NNNN_lower_snake.sql")
        found.append(Migration(int(match["version"]), match["name"], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {folder}")
    return found


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; returns True when it was created."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    name = database_name(url)
    parts = urlsplit(url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        # Identifiers cannot be bound as parameters; quote it the way PostgreSQL does.
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
        log.info("created database %s", name)
        return True
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()


async def apply_migrations(conn: Connection, migrations: list[Migration]) -> list[int]:
    """Apply what is not applied yet, each in its own transaction; returns the versions applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        done: list[int] = []
        for m in migrations:
            if m.version in applied:
                if applied[m.version]["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info("applied migration %04d_%s", m.version, m.name)
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def open_database(
    url: str,
    migrations: Traversable | None,
    pool_size: int,
    *,
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """Create the database if needed, migrate it and return a connection pool.

    `server_settings` are PostgreSQL settings every pooled connection starts with (sent in its
    startup packet: no round trip, and they outlast the `RESET ALL` the pool runs when a
    connection is released, where a session's `SET` would not)."""
    await ensure_database(url)
    if migrations is not None:
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn, load_migrations(migrations))
        finally:
            await conn.close()
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=pool_size, server_settings=dict(server_settings or {})
    )
    assert pool is not None
    return pool
