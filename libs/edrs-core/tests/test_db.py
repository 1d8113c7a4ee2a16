"""Databases and migrations against real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
import pytest
from edrs_core.db import MigrationError, apply_migrations, load_migrations, open_database

pytestmark = pytest.mark.integration


def fresh(name: str) -> str:
    """A database name of this run only: a server kept from an earlier run still holds the
    earlier run's databases, whose migrations were already applied."""
    return f"{name}_{uuid.uuid4().hex[:8]}"


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(sql)


async def test_database_is_created_and_migrations_apply_once(postgres_engine, tmp_path) -> None:
    folder = tmp_path / "migrations"
    write(folder, "0001_create_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    write(folder, "0002_add_name.sql", "ALTER TABLE things ADD COLUMN name text;")
    url = postgres_engine.url(fresh("test_migrations_once"))
    pool = await open_database(url, folder, pool_size=2)
    try:
        await pool.execute("INSERT INTO things VALUES (1, 'a')")
        versions = await pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [1, 2]
    finally:
        await pool.close()
    # A restart applies nothing again and keeps the data.
    conn = await asyncpg.connect(url)
    try:
        assert await apply_migrations(conn, load_migrations(folder)) == []
        assert await conn.fetchval("SELECT name FROM things WHERE id = 1") == "a"
    finally:
        await conn.close()


async def test_changed_migration_is_refused(postgres_engine, tmp_path) -> None:
    folder = tmp_path / "migrations"
    write(folder, "0001_create_t.sql", "CREATE TABLE t (id int);")
    url = postgres_engine.url(fresh("test_migrations_changed"))
    await (await open_database(url, folder, pool_size=1)).close()
    write(folder, "0001_create_t.sql", "CREATE TABLE t (id bigint);")
    with pytest.raises(MigrationError, match="0001_create_t was changed after it was applied"):
        await open_database(url, folder, pool_size=1)


async def test_failed_migration_rolls_back_whole(postgres_engine, tmp_path) -> None:
    folder = tmp_path / "migrations"
    write(folder, "0001_half.sql", "CREATE TABLE half (id int); SELECT no_such_function();")
    url = postgres_engine.url(fresh("test_migrations_rollback"))
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await open_database(url, folder, pool_size=1)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


def test_badly_named_migration_is_refused(tmp_path) -> None:
    write(tmp_path, "create_things.sql", "")
    with pytest.raises(
        MigrationError, match=re.escape("'create_things.sql' is not NNNN_lower_snake.sql")
    ):
        load_migrations(tmp_path)


async def test_server_settings_start_every_pooled_connection_and_outlast_its_reset(
    postgres_engine,
) -> None:
    url = postgres_engine.url(fresh("test_server_settings"))
    custom = {"plan_cache_mode": "force_custom_plan"}
    pool = await open_database(url, None, pool_size=2, server_settings=custom)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            # Both connections the pool opens, not only the one a single call would take.
            assert [await c.fetchval("SHOW plan_cache_mode") for c in (first, second)] == [
                "force_custom_plan",
                "force_custom_plan",
            ]
    finally:
        await pool.close()
    # One connection: a session's own SET is undone when the pool takes it back (asyncpg runs
    # RESET ALL on release), and the startup setting is what RESET restores.
    pool = await open_database(url, None, pool_size=1, server_settings=custom)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await pool.close()
    # Without them, the server's default.
    plain = await open_database(url, None, pool_size=1)
    try:
        assert await plain.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await plain.close()
