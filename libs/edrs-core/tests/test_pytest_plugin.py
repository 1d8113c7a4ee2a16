"""The session engines outlive what any pytest session on the machine does to pytest's folders."""

from __future__ import annotations

import os
import stat

import asyncpg
import pytest
from edrs_core.engines.pytest_plugin import ExternalPostgres


@pytest.mark.integration
async def test_the_session_postgres_keeps_its_data_when_pytests_folders_are_closed(
    postgres_engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each pytest session that starts sets /tmp/pytest-of-<user> back to 0700. Run as root,
    PostgreSQL runs as its own user: with its data under that folder, its next checkpoint
    PANICked (pg_control: Permission denied) and every later test lost the database."""
    if isinstance(postgres_engine, ExternalPostgres):
        pytest.skip("EDRS_TEST_POSTGRES_URL names a server this session did not start")
    basetemp = tmp_path_factory.getbasetemp()
    assert not postgres_engine.data_dir.is_relative_to(basetemp)

    mode = stat.S_IMODE(basetemp.stat().st_mode)
    basetemp.chmod(mode & ~0o077)  # what another pytest session does to its parent
    try:
        conn = await asyncpg.connect(postgres_engine.url())
        try:
            await conn.execute("CHECKPOINT")  # reads and rewrites global/pg_control
        finally:
            await conn.close()
    finally:
        basetemp.chmod(mode)

    conn = await asyncpg.connect(postgres_engine.url())
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
            )
            == 1
        )
    finally:
        await conn.close()
    assert os.access(postgres_engine.data_dir, os.F_OK)
