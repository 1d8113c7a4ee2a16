"""schemathesis against the live gateway's OpenAPI schema: every default check, authenticated."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from edrs_core import testing
from edrs_core.testing import HTTP_TIMEOUT, RunningService, running_service
from edrs_gateway.app import definition as gateway_definition
from edrs_integration.app import definition as integration_definition
from edrs_knowledge.app import definition as knowledge_definition
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition as persona_definition
from edrs_reasoning.app import definition as reasoning_definition
from edrs_research.app import definition as research_definition
from edrs_task.app import definition as task_definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
# Enough generated cases per operation to exercise validation on every field, small enough for CI.
MAX_EXAMPLES = 12
# Peer calls wait on the one CPU model behind the fuzzed knowledge imports (see the fixture).
RPC_TIMEOUT = 30.0


@pytest.fixture(scope="module")
async def gateway(
    postgres_engine, redis_engine, nats_engine, temporal_engine, openbao_engine
) -> AsyncIterator[RunningService]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_st_{service}",
            redis_db=redis_db,
        )

    # Every peer a route calls (memory's recall embeds the query with the real sentence model).
    async with (
        running_service(
            reasoning_definition, start_timeout=180.0, **engines("reasoning", 1)
        ) as reasoning,
        # The knowledge routes fuzzed here queue embeddings on the one CPU model; a recall's
        # query embedding waits behind them, past the 5 s production default on this machine.
        running_service(
            memory_definition,
            peers={"reasoning": reasoning.grpc_address},
            rpc_timeout_seconds=RPC_TIMEOUT,
            **engines("memory", 1),
        ) as memory,
        running_service(
            knowledge_definition,
            peers={"reasoning": reasoning.grpc_address},
            **engines("knowledge", 1),
        ) as knowledge,
        running_service(
            persona_definition,
            peers={
                "memory": memory.grpc_address,
                "reasoning": reasoning.grpc_address,
                "knowledge": knowledge.grpc_address,
            },
            **engines("persona", 1),
        ) as persona_svc,
        running_service(
            integration_definition,
            peers={"knowledge": knowledge.grpc_address},
            vault_address=openbao_engine.url(),
            vault_token=openbao_engine.root_token,
            **engines("integration", 1),
        ) as integration,
        running_service(
            task_definition,
            peers={
                "persona": persona_svc.grpc_address,
                "reasoning": reasoning.grpc_address,
                "integration": integration.grpc_address,
            },
            temporal_address=temporal_engine.url(),
            # Its own queue: no other task service of the session takes its workflows.
            temporal_task_queue="schemathesis",
            **engines("task", 1),
        ) as task,
        running_service(
            research_definition,
            peers={
                "knowledge": knowledge.grpc_address,
                "reasoning": reasoning.grpc_address,
                "task": task.grpc_address,
            },
            rpc_timeout_seconds=RPC_TIMEOUT,
            **{**engines("research", 1), **research_jobs(temporal_engine.url())},
        ) as research,
        running_service(
            gateway_definition,
            **engines("gateway", 0),
            peers={
                "persona": persona_svc.grpc_address,
                "memory": memory.grpc_address,
                "reasoning": reasoning.grpc_address,
                "task": task.grpc_address,
                "knowledge": knowledge.grpc_address,
                "integration": integration.grpc_address,
                "research": research.grpc_address,
            },
            rpc_timeout_seconds=RPC_TIMEOUT,
            # The development bootstrap gives a tenant and an admin to log in with.
            EDRS_ENVIRONMENT="development",
            # The fuzzer checks the API contract; thousands of calls from one tenant would
            # otherwise mostly test the rate limiter, which the security suite covers.
            rate_limits_enabled=False,
        ) as svc,
    ):
        yield svc


def research_jobs(temporal_address: str) -> dict[str, str]:
    """The research service's job settings: Temporal, on a queue of its own."""
    return {"temporal_address": temporal_address, "temporal_task_queue": "schemathesis-research"}


async def admin_token(gateway: RunningService, database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'Development'")
    finally:
        await conn.close()
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        reply = await client.post(
            "/api/v1/auth/token",
            json={
                "grantType": "password",
                "tenantId": str(tenant_id),
                "email": "admin@edrs.local",
                "password": "edrs-development-admin",
            },
        )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["accessToken"])


async def test_schemathesis_finds_no_failures(gateway, postgres_engine, tmp_path) -> None:
    token = await admin_token(gateway, postgres_engine.url("test_st_gateway"))
    st = Path(sys.executable).parent / "st"
    command = [
        str(st),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{gateway.http_url}/api/openapi.json",
        "--checks",
        "all",
        # `all` includes a response-time limit, 10 s unless set: a timed assertion that failed on
        # a loaded 2-core machine (and on a host without DNS) and says nothing about correctness.
        # It cannot be excluded, so it is set to the request timeout below. Speed is measured in
        # `make bench`; slowness that matters here is a peer deadline, a 504.
        "--max-response-time",
        str(RPC_TIMEOUT + 15),
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        # Above the peers' deadline, so a slow peer is the gateway's 504, not a client timeout.
        "--request-timeout",
        str(RPC_TIMEOUT + 15),
        # An SSE stream never ends, so a request to it never completes; test_events_api covers it.
        "--exclude-path",
        "/api/v1/events/stream",
        # A run's watch lasts as long as the run (test_workflows_api covers it).
        "--exclude-path",
        "/api/v1/runs/{runId}/events",
        # Reproducible: the same cases on every run, so CI's verdict is about the code, not the
        # draw. Other seeds are worth a run by hand when the API changes (`--seed N`).
        "--seed",
        "20261123",
        "--generation-deterministic",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(tmp_path),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its cache folder goes there, not into the work tree
        # The serializer of application/x-ndjson bodies (schemathesis_hooks.py says why).
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)},
    )
    out, _ = await proc.communicate()
    output = out.decode()
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
    print(summary)
    assert proc.returncode == 0, output[-20000:]
    assert "Tested:" in summary
    operations = int(summary.split("Tested:")[1].split()[0])
    assert operations >= 15, summary
    assert " 0 failures" in summary or "failures" not in summary.split("Test cases:")[1], summary
    events = [
        json.loads(line) for f in tmp_path.glob("*.ndjson") for line in f.read_text().splitlines()
    ]
    assert events, "schemathesis wrote no report"
