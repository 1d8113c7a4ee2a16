"""Each embedded engine starts, serves a real client, stops without leftovers and keeps its data."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import hvac
import nats
import psutil
import pytest
import redis.asyncio as aioredis
from edrs_core.engines import (
    EmbeddedNats,
    EmbeddedOpenBao,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedTemporal,
    EngineError,
    free_port,
    pick_port,
    port_is_free,
)

pytestmark = pytest.mark.integration


def assert_gone(pid: int | None) -> None:
    assert pid is not None
    assert not psutil.pid_exists(pid), f"engine process {pid} still running after stop()"


async def test_postgres_serves_pgvector_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir) as engine:
        pid, port = engine.pid, engine.port
        conn = await asyncpg.connect(engine.url())
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
            await conn.execute("INSERT INTO items VALUES (1, '[1,2,3]')")
        finally:
            await conn.close()
    assert not engine.is_running()
    assert_gone(pid)

    with EmbeddedPostgres(data_dir) as again:
        again_pid = again.pid
        assert again.port == port, "the previous port was free, so it should be reused"
        conn = await asyncpg.connect(again.url())
        try:
            nearest = await conn.fetchval("SELECT id FROM items ORDER BY embedding <-> '[1,2,4]'")
            assert nearest == 1
        finally:
            await conn.close()
    assert_gone(again_pid)


async def test_postgres_starts_over_a_stale_pid_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir):
        pass
    # What a SIGKILLed server leaves behind: a lock file naming a pid that is not postgres.
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    pid_file.write_text(f"{psutil.Process().pid}\n{data_dir / 'pgdata'}\n0\n5432\n\n\n\n")
    with EmbeddedPostgres(data_dir) as engine:
        conn = await asyncpg.connect(engine.url())
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_redis_serves_and_persists(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir) as engine:
        pid = engine.pid
        client = aioredis.from_url(engine.url(db=3))
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
        await client.aclose()
    assert_gone(pid)

    with EmbeddedRedis(data_dir) as again:
        again_pid = again.pid
        client = aioredis.from_url(again.url(db=3))
        assert await client.get("greeting") == b"hello"
        await client.aclose()
    assert_gone(again_pid)


async def test_nats_jetstream_serves_and_persists(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    with EmbeddedNats(data_dir) as engine:
        pid = engine.pid
        client = await nats.connect(engine.url())
        js = client.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        ack = await js.publish("orders.created", b"one")
        assert ack.stream == "ORDERS"
        await client.close()
    assert_gone(pid)

    with EmbeddedNats(data_dir) as again:
        again_pid = again.pid
        client = await nats.connect(again.url())
        info = await client.jetstream().stream_info("ORDERS")
        assert info.state.messages == 1
        await client.close()
    assert_gone(again_pid)


async def test_temporal_serves_its_namespaces_and_keeps_workflows(tmp_path: Path) -> None:
    # The task service's client; edrs-core itself only starts the server.
    from temporalio.client import Client, WorkflowExecutionStatus

    data_dir = tmp_path / "temporal"
    with EmbeddedTemporal(data_dir, namespaces=["edrs"]) as engine:
        pid = engine.pid
        client = await Client.connect(engine.url(), namespace="edrs")
        # No worker polls this queue: the workflow stays running, in the SQLite file.
        handle = await client.start_workflow(
            "NobodyRunsThis", id="kept-across-restarts", task_queue="nobody"
        )
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert_gone(pid)
    assert engine.db_path.is_file()

    with EmbeddedTemporal(data_dir, namespaces=["edrs"]) as again:
        again_pid = again.pid
        assert again.port == engine.port  # the same address after a restart
        client = await Client.connect(again.url(), namespace="edrs")
        described = await client.get_workflow_handle("kept-across-restarts").describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert described.workflow_type == "NobodyRunsThis"
    assert_gone(again_pid)


def test_engine_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    # An unknown setting makes redis-server exit at once; the error must show why.
    class MisconfiguredRedis(EmbeddedRedis):
        def _command(self) -> list[str]:
            return [*super()._command(), "--no-such-option", "1"]

    engine = MisconfiguredRedis(tmp_path / "redis", start_timeout=10)
    with pytest.raises(EngineError) as caught:
        engine.start()
    message = str(caught.value)
    assert "redis: exited with code" in message
    assert "no-such-option" in message
    assert not engine.is_running()


def test_a_busy_port_is_refused_with_its_number(tmp_path: Path) -> None:
    with (
        EmbeddedRedis(tmp_path / "first") as first,
        pytest.raises(EngineError, match=f"port {first.port} .* already in use"),
    ):
        EmbeddedRedis(tmp_path / "second", port=first.port).start()


def test_pick_port_keeps_a_free_port_and_replaces_a_busy_one(tmp_path: Path) -> None:
    port = free_port()
    assert port_is_free(port)
    assert pick_port(port) == port
    with EmbeddedRedis(tmp_path / "redis") as engine:
        assert not port_is_free(engine.port)
        replacement = pick_port(engine.port)
        assert replacement != engine.port
        assert port_is_free(replacement)


def test_openbao_unseals_its_own_data_again_and_keeps_secrets(tmp_path: Path) -> None:
    data_dir = tmp_path / "bao"
    with EmbeddedOpenBao(data_dir) as engine:
        pid, port = engine.pid, engine.port
        client = hvac.Client(url=engine.url(), token=engine.root_token)
        client.secrets.kv.v2.create_or_update_secret(
            path="edrs/probe", secret={"value": "kept"}, mount_point="secret"
        )
        assert (data_dir / "init.json").stat().st_mode & 0o777 == 0o600
    assert_gone(pid)

    with EmbeddedOpenBao(data_dir) as again:
        assert again.port == port
        client = hvac.Client(url=again.url(), token=again.root_token)
        read = client.secrets.kv.v2.read_secret_version(
            path="edrs/probe", mount_point="secret", raise_on_deleted_version=True
        )
        assert read["data"]["data"] == {"value": "kept"}


def test_openbao_refuses_data_it_cannot_unseal(tmp_path: Path) -> None:
    data_dir = tmp_path / "bao"
    with EmbeddedOpenBao(data_dir):
        pass
    (data_dir / "init.json").unlink()
    with pytest.raises(EngineError, match="unseal key"):
        EmbeddedOpenBao(data_dir).start()
