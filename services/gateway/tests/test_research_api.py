"""`/api/v1/research` through a real gateway in front of the real research service (PostgreSQL,
Temporal, the knowledge service with reasoning's real models): a job over a collection watched
live to its report and exported as Markdown, HTML and PDF, cancel, sources registered, read,
pinned, re-fetched and deleted; bad input named by field, DLP on the question, permissions and
tenant isolation."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pypdfium2
import pytest
from edrs_core.testing import engine_settings, running_service, wait_until
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_knowledge.app import definition as knowledge_definition
from edrs_reasoning.app import definition as reasoning_definition
from edrs_research.app import definition as research_definition

from .conftest import GATEWAY_REDIS_DB, KEY_SECRET, SERVICES_REDIS_DB, ConversationFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

R = "/api/v1/research"
K = "/api/v1/knowledge"
# Ingestion embeds with the real model, and a job plans, searches and verifies with it, on two
# shared cores.
INDEXED_WITHIN = 180.0
JOB_WITHIN = 600.0

# Three documents; the answer to the question is spread over them.
DOCUMENTS = {
    "moon": "# The Moon and tides\n\nThe gravity of the Moon pulls the ocean on the side of the "
    "Earth facing it, raising a bulge of water there.",
    "far-side": "# The far side\n\nOn the side of the Earth away from the Moon, the ocean is "
    "pulled less than the Earth itself, so a second bulge of water forms there.",
    "rotation": "# Two tides a day\n\nThe Earth turns once a day under the two bulges, so most "
    "coasts see two high tides and two low tides every day.",
}
QUESTION = "Why do most coasts see two high tides every day?"


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[ConversationFleet]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_research_{service}",
            redis_db=redis_db,
        )

    # Jobs run on Temporal, on a task queue of this module's own.
    research_settings = {
        "temporal_address": temporal_engine.url(),
        "temporal_task_queue": f"gateway-research-{uuid.uuid4().hex[:8]}",
    }
    async with contextlib.AsyncExitStack() as stack:
        reasoning = await stack.enter_async_context(
            running_service(
                reasoning_definition, start_timeout=180.0, **engines("reasoning", SERVICES_REDIS_DB)
            )
        )
        knowledge = await stack.enter_async_context(
            running_service(
                knowledge_definition,
                peers={"reasoning": reasoning.grpc_address},
                **engines("knowledge", SERVICES_REDIS_DB),
            )
        )
        research = await stack.enter_async_context(
            running_service(
                research_definition,
                peers={"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
                **{
                    **engines("research", SERVICES_REDIS_DB),
                    **research_settings,
                },
            )
        )
        gateway = await stack.enter_async_context(
            running_service(
                gateway_definition,
                peers={"knowledge": knowledge.grpc_address, "research": research.grpc_address},
                key_encryption_secret=KEY_SECRET,
                **engines("gateway", GATEWAY_REDIS_DB),
            )
        )
        rt = gateway.runner.runtime
        assert rt is not None
        yield ConversationFleet(
            gateway,
            GatewayContext.build(rt.settings, rt),
            redis_engine.url(SERVICES_REDIS_DB),
            knowledge,
        )


@pytest.fixture(scope="module")
async def tenant_a(fleet) -> dict[str, Any]:
    tenant = await fleet.new_tenant()
    return {
        "id": tenant,
        "member": await fleet.login(tenant, "member"),
        "viewer": await fleet.login(tenant, "viewer"),
    }


@pytest.fixture(scope="module")
async def tenant_b(fleet) -> dict[str, Any]:
    tenant = await fleet.new_tenant()
    return {"id": tenant, "member": await fleet.login(tenant, "member")}


@pytest.fixture
async def client(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=120) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def unreachable_url(path: str = "page") -> str:
    # `.invalid` never resolves (RFC 6761): the fetch fails, the source is still registered.
    return f"https://{uuid.uuid4().hex[:12]}.invalid/{path}"


async def events_of(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every server-sent event of the job's watch, until the stream ends."""
    found: list[tuple[str, dict[str, Any]]] = []
    async with client.stream(
        "GET", f"{R}/jobs/{job_id}/events", headers=headers, timeout=JOB_WITHIN
    ) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert reply.headers["content-type"].startswith("text/event-stream")
        event, data = "", ""
        async for line in reply.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data += line.removeprefix("data:").strip()
            elif not line and event:
                found.append((event, json.loads(data)))
                event, data = "", ""
    return found


async def indexed_collection(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    name = unique("tides")
    made = await client.post(f"{K}/collections", headers=headers, json={"name": name})
    assert made.status_code == 201, made.text
    ids = []
    for external_id, text in DOCUMENTS.items():
        posted = await client.post(
            f"{K}/collections/{name}/documents",
            headers=headers,
            json={"externalId": external_id, "text": text},
        )
        assert posted.status_code == 202, posted.text
        ids.append(posted.json()["document"]["id"])

    async def all_indexed() -> bool:
        states = []
        for document_id in ids:
            got = await client.get(f"{K}/documents/{document_id}", headers=headers)
            states.append(got.json()["state"])
        assert "failed" not in states, states
        return all(s == "indexed" for s in states)

    await wait_until(
        all_indexed, INDEXED_WITHIN, "the collection's documents to be indexed", interval=0.5
    )
    return name


def pdf_text(content: bytes) -> str:
    doc = pypdfium2.PdfDocument(io.BytesIO(content))
    try:
        return " ".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    finally:
        doc.close()


# -- validation, permissions, DLP (the gateway answers before the service) ---------------------


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/question"),
        ({"question": "ab"}, "/question"),
        ({"question": "q" * 2001}, "/question"),
        ({"question": "Why?", "scope": {"depth": 4}}, "/scope/depth"),
        ({"question": "Why?", "scope": {"maxSources": 51}}, "/scope/maxSources"),
        ({"question": "Why?", "scope": {"maxTokens": 1_000_001}}, "/scope/maxTokens"),
        ({"question": "Why?", "scope": {"recencyDays": -1}}, "/scope/recencyDays"),
        (
            {"question": "Why?", "scope": {"deniedDomains": ["http://x.org/"]}},
            "/scope/deniedDomains/0",
        ),
        (
            {"question": "Why?", "scope": {"allowedDomains": ["Bad Host"]}},
            "/scope/allowedDomains/0",
        ),
        ({"question": "Why?", "scope": {"colections": ["typo"]}}, "/scope/colections"),
        ({"question": "Why?", "personaId": "not-a-uuid"}, "/personaId"),
        ({"question": "Why?", "scope": {"web": 1}}, "/scope/web"),
    ],
)
async def test_a_bad_job_is_refused_naming_the_field(client, tenant_a, body, pointer) -> None:
    reply = await client.post(f"{R}/jobs", headers=tenant_a["member"], json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_failed"
    assert pointer in {e["pointer"] for e in reply.json()["errors"]}, reply.json()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/sources", {"url": "https://a.example.org/", "pinned": True, "blocked": True}),
        ("POST", "/sources", {"url": ""}),
        ("POST", "/sources", {"url": "https://a.example.org/", "blocked": 0}),
        ("POST", "/sources", {"url": "https://a.example.org/" + "x" * 2048}),
        ("PATCH", f"/sources/{uuid.uuid4()}", {}),
        ("PATCH", f"/sources/{uuid.uuid4()}", {"pinned": True, "blocked": True}),
        ("PATCH", f"/sources/{uuid.uuid4()}", {"title": None}),
        ("PATCH", f"/sources/{uuid.uuid4()}", {"pinned": "yes"}),
        ("PATCH", f"/sources/{uuid.uuid4()}", {"title": "x", "url": "https://b.example.org/"}),
    ],
)
async def test_a_bad_source_request_is_refused(client, tenant_a, method, path, body) -> None:
    reply = await client.request(method, f"{R}{path}", headers=tenant_a["member"], json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_failed" and reply.json()["errors"]


async def test_a_bad_id_or_format_is_refused(client, tenant_a) -> None:
    member = tenant_a["member"]
    assert (await client.get(f"{R}/jobs/nope", headers=member)).status_code == 422
    assert (await client.get(f"{R}/sources/nope", headers=member)).status_code == 422
    reply = await client.get(
        f"{R}/jobs/{uuid.uuid4()}/export", params={"format": "docx"}, headers=member
    )
    assert reply.status_code == 422 and reply.json()["errors"][0]["pointer"] == "/format"
    reply = await client.get(f"{R}/jobs", params={"state": "sleeping"}, headers=member)
    assert reply.status_code == 422, reply.text


async def test_a_viewer_reads_but_changes_nothing(client, tenant_a) -> None:
    viewer = tenant_a["viewer"]
    some = uuid.uuid4()
    for method, path, body in (
        ("POST", "/jobs", {"question": "Why is the sky blue?"}),
        ("POST", f"/jobs/{some}/cancel", None),
        ("POST", "/sources", {"url": unreachable_url()}),
        ("PATCH", f"/sources/{some}", {"pinned": True}),
        ("DELETE", f"/sources/{some}", None),
        ("POST", f"/sources/{some}/refetch", None),
    ):
        reply = await client.request(method, f"{R}{path}", headers=viewer, json=body)
        assert (reply.status_code, reply.json()["code"]) == (403, "forbidden"), (path, reply.text)
    listed = await client.get(f"{R}/sources", headers=viewer)
    assert listed.status_code == 200, listed.text


async def test_a_question_with_sensitive_data_is_blocked_under_block(fleet, client) -> None:
    strict = await fleet.new_tenant()
    await fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", strict
    )
    member = await fleet.login(strict, "member")
    reply = await client.post(
        f"{R}/jobs",
        headers=member,
        json={"question": "Who owns the card 4111 1111 1111 1111?"},
    )
    assert (reply.status_code, reply.json()["code"]) == (422, "sensitive_data_blocked")
    assert reply.json()["errors"][0]["pointer"] == "/question"
    listed = await client.get(f"{R}/jobs", headers=member)
    assert listed.status_code == 200 and listed.json()["jobs"] == [], listed.text


# -- sources -----------------------------------------------------------------------------------


async def test_a_source_is_registered_read_listed_pinned_refetched_and_deleted(
    client, tenant_a, tenant_b
) -> None:
    member = tenant_a["member"]
    url = unreachable_url("tides")
    reply = await client.post(f"{R}/sources", headers=member, json={"url": url, "title": "Tides"})
    assert reply.status_code == 201, reply.text
    source = reply.json()
    assert reply.headers["Location"] == f"{R}/sources/{source['id']}"
    assert (source["url"], source["title"]) == (url, "Tides")
    assert source["domain"] == url.split("/")[2]
    # Its page cannot be fetched: registered all the same, failed, with why.
    assert source["state"] == "failed" and source["fetchError"], source
    assert 0.0 <= source["credibility"] <= 1.0 and source["reasons"], source

    again = await client.post(
        f"{R}/sources", headers=member, json={"url": url.upper()[:8] + url[8:]}
    )
    assert (again.status_code, again.json()["code"]) == (409, "already_exists"), again.text
    bad = await client.post(
        f"{R}/sources", headers=member, json={"url": "ftp://files.example.org/a"}
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_failed"), bad.text

    got = await client.get(f"{R}/sources/{source['id']}", headers=member)
    assert got.status_code == 200 and got.json()["id"] == source["id"], got.text
    by_domain = await client.get(
        f"{R}/sources", params={"domain": source["domain"]}, headers=member
    )
    assert [s["id"] for s in by_domain.json()["sources"]] == [source["id"]], by_domain.text

    pinned = await client.patch(
        f"{R}/sources/{source['id']}", headers=member, json={"pinned": True}
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["pinned"] is True and pinned.json()["title"] == "Tides"
    assert any(r["signal"] == "pinned" for r in pinned.json()["reasons"]), pinned.json()
    only_pinned = await client.get(f"{R}/sources", params={"pinned": "true"}, headers=member)
    assert source["id"] in {s["id"] for s in only_pinned.json()["sources"]}
    refetched = await client.post(f"{R}/sources/{source['id']}/refetch", headers=member)
    assert refetched.status_code == 200, refetched.text
    assert refetched.json()["state"] == "failed" and refetched.json()["fetchError"]
    # Both pinned and blocked: refused by the service too (the body alone is fine).
    both = await client.patch(f"{R}/sources/{source['id']}", headers=member, json={"blocked": True})
    assert (both.status_code, both.json()["code"]) == (422, "validation_failed"), both.text
    blocked = await client.patch(
        f"{R}/sources/{source['id']}", headers=member, json={"pinned": False, "blocked": True}
    )
    assert blocked.status_code == 200, blocked.text
    assert (blocked.json()["pinned"], blocked.json()["blocked"]) == (False, True)

    # A blocked source is never fetched, not even on request.
    refused = await client.post(f"{R}/sources/{source['id']}/refetch", headers=member)
    assert (refused.status_code, refused.json()["code"]) == (409, "failed_precondition")

    # Another tenant sees none of it.
    other = tenant_b["member"]
    assert (await client.get(f"{R}/sources/{source['id']}", headers=other)).status_code == 404
    assert (await client.delete(f"{R}/sources/{source['id']}", headers=other)).status_code == 404
    theirs = await client.get(f"{R}/sources", headers=other)
    assert source["id"] not in {s["id"] for s in theirs.json()["sources"]}

    gone = await client.delete(f"{R}/sources/{source['id']}", headers=member)
    assert gone.status_code == 204, gone.text
    after = await client.get(f"{R}/sources/{source['id']}", headers=member)
    assert (after.status_code, after.json()["code"]) == (404, "not_found")


# -- jobs and reports ---------------------------------------------------------------------------


async def test_an_unknown_job_is_404_everywhere(client, tenant_a) -> None:
    member, missing = tenant_a["member"], uuid.uuid4()
    for method, path in (
        ("GET", f"/jobs/{missing}"),
        ("GET", f"/jobs/{missing}/events"),
        ("GET", f"/jobs/{missing}/report"),
        ("GET", f"/jobs/{missing}/export"),
        ("POST", f"/jobs/{missing}/cancel"),
    ):
        reply = await client.request(method, f"{R}{path}", headers=member)
        assert (reply.status_code, reply.json()["code"]) == (404, "not_found"), (path, reply.text)


async def test_a_job_over_a_collection_is_watched_to_its_report_and_exported(
    client, tenant_a, tenant_b
) -> None:
    member = tenant_a["member"]
    collection = await indexed_collection(client, member)
    reply = await client.post(
        f"{R}/jobs",
        headers=member,
        json={"question": QUESTION, "scope": {"collections": [collection], "maxSources": 5}},
    )
    assert reply.status_code == 201, reply.text
    job = reply.json()
    assert reply.headers["Location"] == f"{R}/jobs/{job['id']}"
    assert job["question"] == QUESTION and job["scope"]["collections"] == [collection]
    assert job["scope"]["web"] is False and job["endedAt"] is None

    events = await events_of(client, member, job["id"])
    names = [e for e, _ in events]
    # Updates, then exactly one `ended`, last.
    assert names[-1] == "ended" and names.count("ended") == 1 and "error" not in names, names
    kinds = {data["kind"] for _, data in events}
    assert "plan" in kinds, kinds
    ended = events[-1][1]["job"]
    assert ended["id"] == job["id"] and ended["state"] == "completed", ended
    assert ended["plan"] and ended["progress"]["claims"] >= 1, ended

    got = await client.get(f"{R}/jobs/{job['id']}", headers=member)
    assert got.json()["state"] == "completed" and got.json()["endedAt"], got.text
    listed = await client.get(f"{R}/jobs", params={"state": "completed"}, headers=member)
    assert job["id"] in {j["id"] for j in listed.json()["jobs"]}

    report = (await client.get(f"{R}/jobs/{job['id']}/report", headers=member)).json()
    assert report["jobId"] == job["id"] and report["question"] == QUESTION
    assert report["sections"] and report["citations"], report
    numbers = {c["number"] for c in report["citations"]}
    for section in report["sections"]:
        for claim in section["claims"]:
            assert set(claim["citations"]) <= numbers, claim
    # Each citation is the knowledge service's stored text at its offsets.
    for citation in report["citations"]:
        text = await client.get(
            f"{K}/documents/{citation['documentId']}/text",
            params={
                "version": citation["documentVersion"],
                "start": citation["start"],
                "end": citation["end"],
            },
            headers=member,
        )
        assert text.status_code == 200, text.text
        assert text.json()["text"] == citation["passage"], citation

    first = report["citations"][0]
    for fmt, media, suffix in (
        ("markdown", "text/markdown", "md"),
        ("html", "text/html", "html"),
        ("pdf", "application/pdf", "pdf"),
    ):
        exported = await client.get(
            f"{R}/jobs/{job['id']}/export", params={"format": fmt}, headers=member
        )
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith(media)
        assert exported.headers["content-disposition"] == (
            f'attachment; filename="research-{job["id"]}.{suffix}"'
        )
        if fmt == "pdf":
            assert exported.content.startswith(b"%PDF-")
            text = " ".join(pdf_text(exported.content).split())
            assert f"[{first['number']}]" in text and report["sections"][0]["heading"] in text
        else:
            assert f"cite-{first['number']}" in exported.text
    default = await client.get(f"{R}/jobs/{job['id']}/export", headers=member)
    assert default.headers["content-type"].startswith("text/markdown")

    # An ended job cannot be cancelled; another tenant sees neither job nor report.
    late = await client.post(f"{R}/jobs/{job['id']}/cancel", headers=member)
    assert (late.status_code, late.json()["code"]) == (409, "failed_precondition"), late.text
    other = tenant_b["member"]
    for path in ("", "/report", "/export", "/events"):
        theirs = await client.get(f"{R}/jobs/{job['id']}{path}", headers=other)
        assert theirs.status_code == 404, (path, theirs.text)
    assert job["id"] not in {
        j["id"] for j in (await client.get(f"{R}/jobs", headers=other)).json()["jobs"]
    }


async def test_a_cancelled_job_ends_cancelled_and_has_no_report(client, tenant_a) -> None:
    member = tenant_a["member"]
    name = unique("empty")
    made = await client.post(f"{K}/collections", headers=member, json={"name": name})
    assert made.status_code == 201, made.text
    reply = await client.post(
        f"{R}/jobs",
        headers=member,
        json={
            "question": "What do tides have to do with the Moon?",
            "scope": {"collections": [name], "depth": 3},
        },
    )
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    cancelled = await client.post(f"{R}/jobs/{job_id}/cancel", headers=member)
    assert cancelled.status_code == 200, cancelled.text

    async def ended() -> bool:
        got = await client.get(f"{R}/jobs/{job_id}", headers=member)
        return bool(got.json()["state"] in ("completed", "failed", "cancelled"))

    await wait_until(ended, JOB_WITHIN, f"job {job_id} to end", interval=0.5)
    got = (await client.get(f"{R}/jobs/{job_id}", headers=member)).json()
    assert got["state"] == "cancelled" and got["endedAt"], got
    events = await events_of(client, member, job_id)
    assert events[-1][0] == "ended" and events[-1][1]["job"]["state"] == "cancelled"
    report = await client.get(f"{R}/jobs/{job_id}/report", headers=member)
    assert (report.status_code, report.json()["code"]) == (409, "failed_precondition")
    exported = await client.get(f"{R}/jobs/{job_id}/export", headers=member)
    assert exported.status_code == 409, exported.text
