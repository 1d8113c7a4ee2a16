"""`edrs research` against a real gateway in front of the real research service (PostgreSQL,
Temporal, the knowledge service and reasoning's real models), each command run as a user runs it,
in its own process: a question asked and followed live to its printed report, the report
downloaded as a PDF, jobs listed and shown, sources managed; and the errors a user can meet."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pypdfium2
import pytest
from edrs_core.testing import (
    HTTP_TIMEOUT,
    engine_settings,
    running_service,
    unthrottled,
    wait_until,
)
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_gateway.store import NewTenant
from edrs_knowledge.app import definition as knowledge_definition
from edrs_reasoning.app import definition as reasoning_definition
from edrs_research.app import definition as research_definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
INDEXED_WITHIN = 180.0
DOCUMENTS = {
    "moon": "# The Moon and tides\n\nThe gravity of the Moon pulls the ocean on the side of the "
    "Earth facing it, raising a bulge of water there.",
    "far-side": "# The far side\n\nOn the side of the Earth away from the Moon, the ocean is "
    "pulled less than the Earth itself, so a second bulge of water forms there.",
    "rotation": "# Two tides a day\n\nThe Earth turns once a day under the two bulges, so most "
    "coasts see two high tides and two low tides every day.",
}


@dataclass
class Gateway:
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
async def gateway(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[Gateway]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_research_cli_{service}",
            redis_db=redis_db,
        )

    # Jobs run on Temporal, on a task queue of this module's own.
    research_settings = {
        "temporal_address": temporal_engine.url(),
        "temporal_task_queue": f"cli-research-{uuid.uuid4().hex[:8]}",
    }
    async with contextlib.AsyncExitStack() as stack:
        reasoning = await stack.enter_async_context(
            running_service(reasoning_definition, start_timeout=180.0, **engines("reasoning", 14))
        )
        knowledge = await stack.enter_async_context(
            running_service(
                knowledge_definition,
                peers={"reasoning": reasoning.grpc_address},
                **engines("knowledge", 14),
            )
        )
        research = await stack.enter_async_context(
            running_service(
                research_definition,
                peers={"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
                **{**engines("research", 14), **research_settings},
            )
        )
        svc = await stack.enter_async_context(
            running_service(
                gateway_definition,
                peers={"knowledge": knowledge.grpc_address, "research": research.grpc_address},
                key_encryption_secret="test-key-encryption-secret-0123456789",
                **engines("gateway", 15),
            )
        )
        rt = svc.runner.runtime
        assert rt is not None
        ctx = GatewayContext.build(rt.settings, rt)
        # Enterprise: the tests poll and run many commands, past a standard tenant's rate limit.
        tenant = await ctx.tenants.create(
            NewTenant(name=f"T {uuid.uuid4().hex[:10]}", tier="enterprise")
        )
        email = f"rs-{uuid.uuid4().hex[:8]}@example.com"
        await ctx.users.create(
            tenant.id,
            email=email,
            display_name="rs",
            password_hash=await ctx.passwords.hash(PASSWORD),
            role="member",
        )
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=svc.http_url) as client:
            reply = await client.post(
                "/api/v1/auth/token",
                json={
                    "grantType": "password",
                    "tenantId": str(tenant.id),
                    "email": email,
                    "password": PASSWORD,
                },
            )
            assert reply.status_code == 200, reply.text
        yield Gateway(svc.http_url, reply.json()["accessToken"])


async def edrs(gateway: Gateway, *args: str, state_dir: Path) -> tuple[int, str, str]:
    """Run `edrs research <args>` in its own process against the test gateway."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        "research",
        *args,
        "--url",
        gateway.url,
        "--token",
        gateway.token,
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def tides_collection(gateway: Gateway) -> str:
    name = f"tides-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers, timeout=60) as c:
        # The setup's own requests wait out the tenant's rate limit, as the CLI does.
        made = await unthrottled(
            lambda: c.post("/api/v1/knowledge/collections", json={"name": name})
        )
        assert made.status_code == 201, made.text
        ids = []
        for external_id, text in DOCUMENTS.items():
            posted = await unthrottled(
                lambda external_id=external_id, text=text: c.post(
                    f"/api/v1/knowledge/collections/{name}/documents",
                    json={"externalId": external_id, "text": text},
                )
            )
            assert posted.status_code == 202, posted.text
            ids.append(posted.json()["document"]["id"])

        async def indexed() -> bool:
            states = []
            for i in ids:
                got = await c.get(f"/api/v1/knowledge/documents/{i}")
                if got.status_code == 429:  # the tenant's rate limit: ask again later
                    return False
                assert got.status_code == 200, got.text
                states.append(got.json()["state"])
            assert "failed" not in states, states
            return all(s == "indexed" for s in states)

        await wait_until(
            indexed, INDEXED_WITHIN, "the collection's documents to be indexed", interval=0.5
        )
    return name


async def test_a_question_is_followed_live_and_its_report_printed_and_downloaded(
    gateway: Gateway, tmp_path: Path
) -> None:
    collection = await tides_collection(gateway)
    code, out, err = await edrs(
        gateway,
        "Why do most coasts see two high tides every day?",
        "--collection",
        collection,
        "--max-sources",
        "5",
        state_dir=tmp_path,
    )
    assert code == 0, (out, err)
    # Progress went to stderr: the job, its plan, and how it ended.
    started = err.splitlines()[0]
    assert started.startswith("job ") and started.endswith(" started"), err
    job_id = started.split()[1]
    assert "  plan: " in err, err
    assert f"job {job_id} completed: " in err, err
    # The report on stdout, as Markdown (not a terminal: not rendered).
    assert out.startswith("# "), out
    assert "## Citations" in out and "](#cite-1)" in out, out

    code, out, err = await edrs(gateway, "jobs", "--json", state_dir=tmp_path)
    assert code == 0, err
    [listed] = [j for j in json.loads(out) if j["id"] == job_id]
    assert listed["state"] == "completed" and listed["scope"]["collections"] == [collection]
    assert listed["scope"]["web"] is False  # a collection given, no --web: the web is not searched
    code, out, err = await edrs(gateway, "job", job_id, state_dir=tmp_path)
    assert code == 0 and "completed" in out and "plan 1" in out, (out, err)

    target = tmp_path / "report.pdf"
    code, out, err = await edrs(
        gateway, "report", job_id, "--format", "pdf", "--output", str(target), state_dir=tmp_path
    )
    assert code == 0, err
    assert out.startswith(f"report written to {target}"), out
    document = pypdfium2.PdfDocument(io.BytesIO(target.read_bytes()))
    text = " ".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    document.close()
    assert "Citations" in " ".join(text.split())

    code, out, err = await edrs(gateway, "report", job_id, "--format", "json", state_dir=tmp_path)
    assert code == 0 and json.loads(out)["jobId"] == job_id, err
    code, out, err = await edrs(gateway, "report", job_id, "--format", "pdf", state_dir=tmp_path)
    assert code == 2 and "--output" in err, (out, err)

    # An ended job cannot be cancelled: the gateway's reason, exit 2.
    code, out, err = await edrs(gateway, "cancel", job_id, state_dir=tmp_path)
    assert code == 2 and err.startswith("error: "), (out, err)


async def test_a_job_started_detached_is_cancelled(gateway: Gateway, tmp_path: Path) -> None:
    collection = await tides_collection(gateway)
    code, out, err = await edrs(
        gateway, "What pulls the oceans?", "-c", collection, "--depth", "3", "--detach",
        state_dir=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    job_id = out.split()[1]
    code, out, err = await edrs(gateway, "cancel", job_id, state_dir=tmp_path)
    assert code == 0 and out.startswith(f"job {job_id} "), (out, err)
    code, out, err = await edrs(gateway, "watch", job_id, state_dir=tmp_path)
    assert code == 1 and f"job {job_id} cancelled" in err, (out, err)


async def test_sources_are_added_pinned_shown_and_deleted(gateway: Gateway, tmp_path: Path) -> None:
    url = f"https://{uuid.uuid4().hex[:12]}.invalid/tides"
    code, out, err = await edrs(gateway, "sources", "add", url, "--json", state_dir=tmp_path)
    # The page cannot be fetched: registered all the same, failed, exit 1.
    assert code == 1, (out, err)
    source = json.loads(out)
    assert source["url"] == url and source["state"] == "failed" and source["fetchError"]

    code, out, err = await edrs(
        gateway, "sources", "update", source["id"], "--pin", state_dir=tmp_path
    )
    assert code == 0 and "pinned" in out, (out, err)
    code, out, err = await edrs(
        gateway, "sources", "list", "--pinned", "--json", state_dir=tmp_path
    )
    assert source["id"] in {s["id"] for s in json.loads(out)}, (out, err)
    code, out, err = await edrs(gateway, "sources", "show", source["id"], state_dir=tmp_path)
    assert code == 0 and "credibility" in out and url in out, (out, err)
    code, out, err = await edrs(gateway, "sources", "refetch", source["id"], state_dir=tmp_path)
    assert code == 0 and "failed" in out, (out, err)

    code, out, err = await edrs(gateway, "sources", "delete", source["id"], state_dir=tmp_path)
    assert code == 0 and out.strip() == f"deleted source {source['id']}", (out, err)
    code, out, err = await edrs(gateway, "sources", "show", source["id"], state_dir=tmp_path)
    assert code == 2 and "not found" in err, (out, err)


async def test_bad_input_is_refused_with_why(gateway: Gateway, tmp_path: Path) -> None:
    code, out, err = await edrs(gateway, "ab", "--no-web", state_dir=tmp_path)
    assert code == 2 and "question" in err, (out, err)
    code, out, err = await edrs(
        gateway, "report", str(uuid.uuid4()), "--format", "docx", state_dir=tmp_path
    )
    assert code == 2 and "--format" in err, (out, err)
    missing = str(uuid.uuid4())
    code, out, err = await edrs(gateway, "job", missing, state_dir=tmp_path)
    assert code == 2 and err.startswith("error: ") and missing in err, (out, err)
    code, out, err = await edrs(
        gateway, "sources", "add", "ftp://files.example.org/a", state_dir=tmp_path
    )
    assert code == 2 and err.startswith("error: "), (out, err)
