"""`/api/v1/export` and `/api/v1/import` through the real gateway in front of the real persona,
knowledge (with the reasoning service's embeddings) and task services on the embedded Temporal
server: tenant A exported and imported into tenant B reproduces A's personas (co-workers and
collections remapped), documents, workflow versions and tasks; a second import duplicates nothing;
bad lines are refused with their numbers and nothing imported; a record that fails alone is
reported with its line; only admins may export or import; a tenant's export holds only its own."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from edrs_core.engines.ports import free_port
from edrs_core.testing import engine_settings, running_service, unthrottled, wait_until
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_knowledge.app import definition as knowledge_definition
from edrs_persona.app import definition as persona_definition
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import definition as task_definition

from .conftest import (
    GATEWAY_REDIS_DB,
    KEY_SECRET,
    SERVICES_REDIS_DB,
    ConversationFleet,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API = "/api/v1"
NDJSON = {"Content-Type": "application/x-ndjson"}
# Ingestion embeds with the real sentence model on two shared cores.
INDEXED_WITHIN = 180.0


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[ConversationFleet]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_transfer_{service}",
            redis_db=redis_db,
        )

    async with contextlib.AsyncExitStack() as stack:
        reasoning = await stack.enter_async_context(
            # The models load at start-up.
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
        persona = await stack.enter_async_context(
            running_service(
                persona_definition,
                peers={"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
                **engines("persona", SERVICES_REDIS_DB),
            )
        )
        task = await stack.enter_async_context(
            running_service(
                task_definition,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                # Its own queue: no other task service of the session takes its workflows.
                temporal_task_queue=f"gateway-transfer-{uuid.uuid4().hex[:8]}",
                **engines("task", SERVICES_REDIS_DB),
            )
        )
        gateway = await stack.enter_async_context(
            running_service(
                gateway_definition,
                peers={
                    "persona": persona.grpc_address,
                    "knowledge": knowledge.grpc_address,
                    "task": task.grpc_address,
                    "reasoning": reasoning.grpc_address,
                },
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


@pytest.fixture
async def client(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=300) as c:
        yield c


async def admin_of_new_tenant(fleet: ConversationFleet) -> dict[str, str]:
    return await fleet.login(await fleet.new_tenant(), "admin")


async def ok(reply: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    return dict(reply.json())


async def settled(client: httpx.AsyncClient, headers: dict[str, str], document_id: str) -> None:
    async def done() -> bool:
        reply = await client.get(f"{API}/knowledge/documents/{document_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["state"] != "failed", reply.text
        return bool(reply.json()["state"] == "indexed")

    await wait_until(done, INDEXED_WITHIN, f"document {document_id} to be indexed")


async def export_of(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict]:
    reply = await client.get(f"{API}/export", params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in reply.text.splitlines() if line.strip()]


def as_ndjson(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


async def all_of(client: httpx.AsyncClient, headers: dict[str, str], path: str, key: str, **params):
    found: list[dict] = []
    token = ""
    while True:
        reply = await client.get(
            f"{API}{path}", params={**params, "pageToken": token}, headers=headers
        )
        page = await ok(reply)
        found += page[key]
        token = page["nextPageToken"]
        if not token:
            return found


async def text_of(client: httpx.AsyncClient, headers: dict[str, str], document_id: str) -> str:
    reply = await client.get(f"{API}/knowledge/documents/{document_id}/text", headers=headers)
    return str((await ok(reply))["text"])


SPEC_V1 = {"steps": [{"id": "settle", "type": "wait", "with": {"seconds": 0.2}}]}
SPEC_V2 = {
    "steps": [
        {"id": "settle", "type": "wait", "with": {"seconds": 0.5}},
        {"id": "again", "type": "wait", "dependsOn": ["settle"], "with": {"seconds": 1}},
    ]
}


async def fill_tenant_a(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """A collection with two documents, two personas who are co-workers (one answering from the
    collection), a workflow with two versions and a task assigned to a persona."""
    collection = await ok(
        await client.post(
            f"{API}/knowledge/collections",
            json={"name": "handbook", "description": "Company policies"},
            headers=admin,
        ),
        201,
    )
    vpn = await ok(
        await client.post(
            f"{API}/knowledge/collections/handbook/documents",
            json={
                "externalId": "faq/vpn",
                "title": "VPN access",
                "text": "# VPN\n\nConnect with the Acme VPN client; the server is vpn.acme.example.",
                "source": "https://intranet.example/vpn",
                "metadata": {"team": "it", "level": "basic"},
            },
            headers=admin,
        ),
        202,
    )
    leave = await ok(
        await client.post(
            f"{API}/knowledge/collections/handbook/documents",
            json={"title": "Leave policy", "text": "Everyone has 25 days of paid leave a year."},
            headers=admin,
        ),
        202,
    )
    for document in (vpn, leave):
        await settled(client, admin, document["document"]["id"])
    ada = await ok(
        await client.post(
            f"{API}/personas",
            json={
                "name": "Ada",
                "role": "research analyst",
                "skills": ["research", "sql"],
                "responsibilities": ["weekly market summary"],
                "tone": "warm, concise",
                "instructions": "Cite a source for every figure.\nNever guess.",
                "voice": {"name": "", "speed": 1.2},
                "knowledgeCollections": ["handbook"],
            },
            headers=admin,
        ),
        201,
    )
    bob = await ok(
        await client.post(f"{API}/personas", json={"name": "Bob", "role": "editor"}, headers=admin),
        201,
    )
    await ok(
        await client.put(
            f"{API}/personas/{ada['id']}/coworkers/{bob['id']}",
            json={"relation": "reviews my analyses", "handover": "Send the draft with sources."},
            headers=admin,
        )
    )
    for spec in (SPEC_V1, SPEC_V2):
        await ok(
            await client.post(
                f"{API}/workflows",
                json={"name": "publish", "description": "Settle, then publish", "spec": spec},
                headers=admin,
            ),
            201,
        )
    task = await ok(
        await client.post(
            f"{API}/tasks",
            json={
                "title": "Summarise the market",
                "description": "Weekly, with sources.",
                "assigneePersonaId": ada["id"],
                "priority": 2,
                "dueAt": "2030-01-31T17:00:00Z",
            },
            headers=admin,
        ),
        201,
    )
    return {"collection": collection, "ada": ada, "bob": bob, "task": task}


def ids_in(value: Any) -> set[str]:
    """Every UUID-looking string anywhere in `value`."""
    found: set[str] = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= ids_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= ids_in(v)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            found.add(str(uuid.UUID(value)))
    return found


async def test_an_export_of_a_imported_into_b_reproduces_a_and_imports_once(fleet, client) -> None:
    a, b = await admin_of_new_tenant(fleet), await admin_of_new_tenant(fleet)
    made = await fill_tenant_a(client, a)

    exported = await export_of(client, a)
    assert exported[0]["kind"] == "header"
    assert exported[0]["data"]["format"] == "edrs-export"
    assert exported[0]["data"]["version"] == 1
    assert exported[-1] == {"kind": "footer", "data": {"records": len(exported) - 2, "skipped": []}}
    kinds = [r["kind"] for r in exported[1:-1]]
    assert sorted(kinds) == sorted(
        ["collection", "document", "document", "persona", "persona", "workflow", "workflow", "task"]
    )

    reply = await client.post(f"{API}/import", content=as_ndjson(exported), headers={**b, **NDJSON})
    result = await ok(reply)
    assert result["failed"] == [], result
    assert result["imported"] == 8 and result["unchanged"] == 0
    assert [r["line"] for r in result["records"]] == list(range(2, len(exported)))

    # Knowledge: the collection, the documents with their text, titles, sources and metadata.
    b_collection = await ok(await client.get(f"{API}/knowledge/collections/handbook", headers=b))
    assert b_collection["description"] == "Company policies"
    assert b_collection["id"] != made["collection"]["id"]
    a_docs = await all_of(client, a, "/knowledge/documents", "documents", collection="handbook")
    b_docs = await all_of(client, b, "/knowledge/documents", "documents", collection="handbook")
    for document in b_docs:
        await settled(client, b, document["id"])
    assert len(b_docs) == 2

    def shape(d: dict) -> tuple:
        return (d["title"], d["externalId"], d["source"], d["metadata"], d["format"])

    assert sorted(map(shape, b_docs)) == sorted(map(shape, a_docs))
    a_texts = {d["title"]: await text_of(client, a, d["id"]) for d in a_docs}
    b_texts = {d["title"]: await text_of(client, b, d["id"]) for d in b_docs}
    assert b_texts == a_texts
    assert "vpn.acme.example" in b_texts["VPN access"]

    # Personas: every field, the collection remapped to B's, the co-workers to B's personas.
    fields = ("role", "skills", "responsibilities", "tone", "instructions", "voice", "tools",
              "toolPolicy", "status")  # fmt: skip
    a_personas = {p["name"]: p for p in await all_of(client, a, "/personas", "personas")}
    b_personas = {p["name"]: p for p in await all_of(client, b, "/personas", "personas")}
    assert sorted(b_personas) == ["Ada", "Bob"]
    for name, persona in a_personas.items():
        assert {f: b_personas[name][f] for f in fields} == {f: persona[f] for f in fields}
    assert b_personas["Ada"]["knowledgeCollections"] == [b_collection["id"]]
    coworkers = await ok(
        await client.get(f"{API}/personas/{b_personas['Ada']['id']}/coworkers", headers=b)
    )
    assert [
        (c["coworkerId"], c["coworkerName"], c["relation"], c["handover"])
        for c in coworkers["coworkers"]
    ] == [(b_personas["Bob"]["id"], "Bob", "reviews my analyses", "Send the draft with sources.")]

    # Workflows: both versions, in order, with their definitions.
    for version in (1, 2):
        params = {"version": version}
        was = await ok(await client.get(f"{API}/workflows/publish", params=params, headers=a))
        got = await ok(await client.get(f"{API}/workflows/publish", params=params, headers=b))
        # The task service stores a definition with its defaults filled in.
        assert got["spec"] == was["spec"]
        assert [s["with"] for s in got["spec"]["steps"]] == [
            s["with"] for s in (SPEC_V1, SPEC_V2)[version - 1]["steps"]
        ]
        assert got["description"] == "Settle, then publish"
    latest = await ok(await client.get(f"{API}/workflows/publish", headers=b))
    assert latest["version"] == 2

    # Tasks: assigned to B's Ada.
    b_tasks = await all_of(client, b, "/tasks", "tasks")
    assert [
        (t["title"], t["description"], t["priority"], t["dueAt"], t["assigneePersonaId"])
        for t in b_tasks
    ] == [
        (
            "Summarise the market",
            "Weekly, with sources.",
            2,
            "2030-01-31T17:00:00Z",
            b_personas["Ada"]["id"],
        )
    ]

    # The same file again changes nothing and duplicates nothing.
    again = await ok(
        await client.post(f"{API}/import", content=as_ndjson(exported), headers={**b, **NDJSON})
    )
    assert again["failed"] == [], again
    assert (again["imported"], again["unchanged"]) == (0, 8)
    assert {r["outcome"] for r in again["records"]} == {"unchanged"}
    assert len(await all_of(client, b, "/personas", "personas")) == 2
    assert len(await all_of(client, b, "/knowledge/documents", "documents")) == 2
    assert len(await all_of(client, b, "/tasks", "tasks")) == 1
    assert (await ok(await client.get(f"{API}/workflows/publish", headers=b)))["version"] == 2

    # A's export imported back into A (whose Markdown input differs from the stored text it
    # exported) changes nothing either: no new version, no copy.
    into_a = await ok(
        await client.post(f"{API}/import", content=as_ndjson(exported), headers={**a, **NDJSON})
    )
    assert (into_a["imported"], into_a["unchanged"], into_a["failed"]) == (0, 8, []), into_a
    a_docs_after = await all_of(client, a, "/knowledge/documents", "documents")
    assert sorted((d["id"], d["version"]) for d in a_docs_after) == sorted(
        (d["id"], d["version"]) for d in a_docs
    )

    # B's export holds B's records only: none of A's ids, its own personas.
    b_export = await export_of(client, b)
    a_ids = ids_in(exported[1:-1]) - {exported[0]["data"]["tenantId"]}
    assert not ids_in(b_export) & a_ids
    assert {r["data"]["id"] for r in b_export if r["kind"] == "persona"} == {
        p["id"] for p in b_personas.values()
    }
    assert made["task"]["id"] not in json.dumps(b_export)


async def test_kinds_select_what_is_exported_and_csv_gives_one_table(fleet, client) -> None:
    admin = await admin_of_new_tenant(fleet)
    persona = await ok(
        await client.post(f"{API}/personas", json={"name": "Cy", "role": "planner"}, headers=admin),
        201,
    )
    await ok(
        await client.post(
            f"{API}/tasks",
            json={"title": 'Plan, the "offsite"', "assigneePersonaId": persona["id"]},
            headers=admin,
        ),
        201,
    )
    only_tasks = await export_of(client, admin, kinds="tasks")
    assert [r["kind"] for r in only_tasks] == ["header", "task", "footer"]
    assert only_tasks[1]["data"]["assigneePersonaName"] == "Cy"

    # A title a spreadsheet would run as a formula is written as text.
    await ok(await client.post(f"{API}/tasks", json={"title": "=1+2"}, headers=admin), 201)
    reply = await client.get(
        f"{API}/export", params={"kinds": "tasks", "format": "csv"}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert sorted((r["title"], r["assigneePersonaName"], r["status"]) for r in rows) == [
        ("'=1+2", "", "queued"),
        ('Plan, the "offsite"', "Cy", "queued"),
    ]

    for params, pointer in (
        ({"kinds": "documents", "format": "csv"}, "/kinds"),
        ({"kinds": "spaceships"}, "/kinds"),
    ):
        bad = await client.get(f"{API}/export", params=params, headers=admin)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["pointer"] == pointer


async def test_bad_lines_are_refused_with_their_numbers_and_nothing_is_imported(
    fleet, client
) -> None:
    admin = await admin_of_new_tenant(fleet)
    # As a Windows editor saves it: a byte order mark, CRLF line ends.
    body = b"\xef\xbb\xbf" + b"\r\n".join(
        [
            b'{"kind": "header", "data": {"format": "edrs-export", "version": 1}}',
            b'{"kind": "collection", "data": {"name": "fine"}}',
            b'{"kind": "persona", "data": {"name": "Fine", "role": "ok"}}',
            b"{not json",
            b'{"kind": "spaceship", "data": {}}',
            b"",
            b'{"kind": "persona", "data": {"name": "No role"}}',
            b'{"kind": "document", "data": {"collectionName": "fine", "title": "t"}}',
            b'{"kind": "collection", "data": {"name": "fine"}}',
            b'{"kind": "collection", "data": ["fine"]}',
            # A map's key is the file's own: named as written, not camelCased.
            b'{"kind": "document", "data": {"collectionName": "fine", "text": "t", '
            b'"metadata": {"my_key": 5}}}',
            # Over int64: a 422 on its line, not a 500 building the task service's request.
            b'{"kind": "task", "data": {"title": "t", "budget": {"maxTokens": 9223372036854775808}}}',
            b'{"kind": "collection", "data": {"name": "caf\xe9"}}',
            b'{"kind": "persona", "data": {"name": "Tools", "role": "r", "tools": "search"}}',
            # Nested past what the checks behind the parse recurse through: a 422, not a 500.
            b'{"kind": "workflow", "data": {"name": "w", "spec": {"a": '
            + b"[" * 900
            + b"]" * 900
            + b"}}}",
            # Past 9999-12-31 in UTC: a 422, not a 500 building the task's Timestamp.
            b'{"kind": "task", "data": {"title": "t", "dueAt": "9999-12-31T23:00:00-05:00"}}',
        ]
    )
    reply = await client.post(f"{API}/import", content=body, headers={**admin, **NDJSON})
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["code"] == "validation_failed"
    assert [(e["line"], e["kind"], e["code"], e["pointer"]) for e in problem["errors"]] == [
        (4, None, "invalid_json", ""),
        (5, "spaceship", "unknown_kind", "/kind"),
        (7, "persona", "invalid_record", "/data/role"),
        (8, "document", "invalid_record", "/data/text"),
        (9, "collection", "duplicate_record", "/data"),
        (10, "collection", "invalid_record", "/data"),
        (11, "document", "invalid_record", "/data/metadata/my_key"),
        (12, "task", "invalid_record", "/data/budget/maxTokens"),
        (13, None, "invalid_json", ""),
        (14, "persona", "invalid_record", "/data/tools"),
        (15, None, "invalid_record", ""),
        (16, "task", "invalid_record", "/data/dueAt"),
    ]
    assert all(e["detail"].startswith(f"line {e['line']}: ") for e in problem["errors"])
    details = {e["line"]: e["detail"] for e in problem["errors"]}
    assert details[7] == "line 7: /data/role: Field required"
    assert details[10] == "line 10: `data` must be an object, not list"
    assert details[13] == "line 13: is not UTF-8 text (byte 0xe9 at byte 45)"
    assert details[15] == "line 15: nests deeper than 32 levels"
    # Nothing of the good lines was imported.
    assert await all_of(client, admin, "/personas", "personas") == []
    missing = await client.get(f"{API}/knowledge/collections/fine", headers=admin)
    assert missing.status_code == 404

    # Lenient: the same file imports its good lines and lists the bad ones as failed.
    lenient = await ok(
        await client.post(
            f"{API}/import", params={"mode": "lenient"}, content=body, headers={**admin, **NDJSON}
        )
    )
    assert [(f["line"], f["kind"], f["code"]) for f in lenient["failed"]] == [
        (4, "", "invalid_json"),
        (5, "spaceship", "unknown_kind"),
        (7, "persona", "invalid_record"),
        (8, "document", "invalid_record"),
        (9, "collection", "duplicate_record"),
        (10, "collection", "invalid_record"),
        (11, "document", "invalid_record"),
        (12, "task", "invalid_record"),
        (13, "", "invalid_json"),
        (14, "persona", "invalid_record"),
        (15, "", "invalid_record"),
        (16, "task", "invalid_record"),
    ]
    assert [(r["line"], r["outcome"]) for r in lenient["records"]] == [
        (2, "created"),
        (3, "created"),
        (4, "failed"),
        (5, "failed"),
        (7, "failed"),
        (8, "failed"),
        (9, "failed"),
        (10, "failed"),
        (11, "failed"),
        (12, "failed"),
        (13, "failed"),
        (14, "failed"),
        (15, "failed"),
        (16, "failed"),
    ]
    assert [p["name"] for p in await all_of(client, admin, "/personas", "personas")] == ["Fine"]
    await ok(await client.get(f"{API}/knowledge/collections/fine", headers=admin))

    headless = await client.post(
        f"{API}/import",
        content=b'{"kind": "collection", "data": {"name": "fine"}}\n',
        headers={**admin, **NDJSON},
    )
    assert headless.status_code == 422
    assert headless.json()["errors"][0]["detail"] == "line 1: a header must come first"
    broken = as_ndjson(
        [
            {"kind": "header", "data": {"format": "edrs-export", "version": 1}},
            {"kind": "error", "data": {"code": "upstream_unavailable", "detail": "..."}},
        ]
    )
    for mode in ("strict", "lenient"):
        refused = await client.post(
            f"{API}/import", params={"mode": mode}, content=broken, headers={**admin, **NDJSON}
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["code"] == "incomplete_export"
    lenient_headless = await client.post(
        f"{API}/import",
        params={"mode": "lenient"},
        content=b'{"kind": "collection", "data": {"name": "other"}}\n',
        headers={**admin, **NDJSON},
    )
    assert lenient_headless.status_code == 422
    assert lenient_headless.json()["errors"][0]["code"] == "missing_header"
    # Whatever stands where the header should, even lenient refuses the file, naming line 1.
    future = b'{"kind": "header", "data": {"format": "edrs-export", "version": 2}}\n'
    other = b'{"kind": "collection", "data": {"name": "other"}}\n'
    for content, expected in (
        (b"", [(1, "missing_header")]),
        (b"\n  \r\n\n", [(1, "missing_header")]),
        (b"[1, 2]\n" + other, [(1, "invalid_record"), (1, "missing_header")]),
        (
            b'{"kind": "spaceship", "data": {}}\n' + other,
            [(1, "unknown_kind"), (1, "missing_header")],
        ),
        (b'{"kind": "footer", "data": {}}\n', [(1, "missing_header")]),
        (future + other, [(1, "invalid_record")]),
    ):
        refused = await client.post(
            f"{API}/import",
            params={"mode": "lenient"},
            content=content,
            headers={**admin, **NDJSON},
        )
        assert refused.status_code == 422, (content, refused.text)
        assert [(e["line"], e["code"]) for e in refused.json()["errors"]] == expected, content
    assert "version 2 is not one this gateway reads" in refused.json()["detail"]
    assert (
        await client.get(f"{API}/knowledge/collections/other", headers=admin)
    ).status_code == 404
    # More lines than an import takes: refused before any is read.
    too_many = await client.post(
        f"{API}/import", content=b"{}\n" * 20_001, headers={**admin, **NDJSON}
    )
    assert too_many.status_code == 422
    assert "20001 lines; the most per import is 20000" in too_many.json()["detail"]
    wrong_type = await client.post(f"{API}/import", content=broken, headers=admin)
    assert wrong_type.status_code == 415

    # A tenant that blocks sensitive data: each hit named by its line.
    strict = await fleet.new_tenant()
    await fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", strict
    )
    card = as_ndjson(
        [
            {"kind": "header", "data": {"format": "edrs-export", "version": 1}},
            {"kind": "collection", "data": {"name": "cards"}},
            {
                "kind": "document",
                "data": {"collectionName": "cards", "text": "4111 1111 1111 1111"},
            },
        ]
    )
    blocked = await client.post(
        f"{API}/import", content=card, headers={**await fleet.login(strict, "admin"), **NDJSON}
    )
    assert blocked.status_code == 422, blocked.text
    assert blocked.json()["code"] == "sensitive_data_blocked"
    [hit] = blocked.json()["errors"]
    assert (hit["line"], hit["pointer"]) == (3, "/3/data/text")
    assert hit["detail"].startswith("line 3: ") and hit["detail"].endswith(" at /3/data/text")


async def test_a_record_that_fails_is_reported_on_its_line_and_the_others_are_imported(
    fleet, client
) -> None:
    admin, other = await admin_of_new_tenant(fleet), await admin_of_new_tenant(fleet)
    # Another tenant's persona, named by its id only: never reached from this tenant.
    foreign = await ok(
        await client.post(f"{API}/personas", json={"name": "Zed", "role": "x"}, headers=other),
        201,
    )
    body = as_ndjson(
        [
            {"kind": "header", "data": {"format": "edrs-export", "version": 1}},
            {"kind": "persona", "data": {"name": "Dee", "role": "writer"}},
            {"kind": "task", "data": {"title": "Orphan", "assigneePersonaName": "Nobody"}},
            {"kind": "task", "data": {"title": "Draft", "assigneePersonaName": "Dee"}},
            {
                "kind": "persona",
                "data": {"name": "Eve", "role": "r", "knowledgeCollectionNames": ["absent"]},
            },
            {"kind": "task", "data": {"title": "Steal", "assigneePersonaId": foreign["id"]}},
        ]
    )
    result = await ok(await client.post(f"{API}/import", content=body, headers={**admin, **NDJSON}))
    assert [(f["line"], f["kind"]) for f in result["failed"]] == [
        (3, "task"),
        (5, "persona"),
        (6, "task"),
    ]
    assert result["failed"][2]["code"] == "not_found"
    assert "Nobody" in result["failed"][0]["detail"]
    assert result["failed"][1]["code"] in ("not_found", "validation_failed", "failed_precondition")
    assert [(r["line"], r["outcome"]) for r in result["records"]] == [
        (2, "created"),
        (3, "failed"),
        (4, "created"),
        (5, "failed"),
        (6, "failed"),
    ]
    personas = await all_of(client, admin, "/personas", "personas")
    assert [p["name"] for p in personas] == ["Dee"]
    tasks = await all_of(client, admin, "/tasks", "tasks")
    assert [(t["title"], t["assigneePersonaId"]) for t in tasks] == [("Draft", personas[0]["id"])]
    assert await all_of(client, other, "/tasks", "tasks") == []

    # Two personas of one name (a tenant may hold them) are two personas, matched the second time
    # to the same two (the oldest first), neither updated with the other's fields.
    twins = as_ndjson(
        [
            {"kind": "header", "data": {"format": "edrs-export", "version": 1}},
            {"kind": "persona", "data": {"name": "Twin", "role": "first"}},
            {"kind": "persona", "data": {"name": "Twin", "role": "second"}},
        ]
    )
    for outcome in ("created", "unchanged"):
        twice = await ok(
            await client.post(f"{API}/import", content=twins, headers={**admin, **NDJSON})
        )
        assert [(r["line"], r["outcome"]) for r in twice["records"]] == [(2, outcome), (3, outcome)]
    roles = [p["role"] for p in await all_of(client, admin, "/personas", "personas")]
    assert sorted(r for r in roles if r in ("first", "second")) == ["first", "second"]


async def test_only_admins_export_and_import(fleet, client) -> None:
    tenant = await fleet.new_tenant()
    body = as_ndjson([{"kind": "header", "data": {"format": "edrs-export", "version": 1}}])
    for role in ("member", "viewer", "integrator"):
        headers = await fleet.login(tenant, role)
        assert (await client.get(f"{API}/export", headers=headers)).status_code == 403
        imported = await client.post(f"{API}/import", content=body, headers={**headers, **NDJSON})
        assert imported.status_code == 403
    assert (await unthrottled(lambda: client.get(f"{API}/export"))).status_code == 401
    anonymous = await unthrottled(
        lambda: client.post(f"{API}/import", content=body, headers=NDJSON)
    )
    assert anonymous.status_code == 401


async def edrs(fleet, headers: dict[str, str], *args: str, state_dir) -> tuple[int, str, str]:
    """`edrs <args>` in its own process, as a user runs it, against the test gateway."""
    token = headers["Authorization"].removeprefix("Bearer ")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edrs_cli", *args, "--url", fleet.url, "--token", token,
        "--state-dir", str(state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_edrs_export_and_import_commands(fleet, client, tmp_path) -> None:
    a, b = await admin_of_new_tenant(fleet), await admin_of_new_tenant(fleet)
    await ok(
        await client.post(f"{API}/personas", json={"name": "Flo", "role": "ops"}, headers=a), 201
    )
    await ok(
        await client.post(f"{API}/workflows", json={"name": "nightly", "spec": SPEC_V1}, headers=a),
        201,
    )
    exported = tmp_path / "a.ndjson"
    code, _, err = await edrs(
        fleet, a, "export", "--kinds", "personas,workflows", "-o", str(exported),
        state_dir=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "exported 2 records" in err
    code, out, err = await edrs(fleet, b, "import", str(exported), state_dir=tmp_path)
    assert code == 0, err
    assert "imported 2, unchanged 0, failed 0" in out
    assert [p["name"] for p in await all_of(client, b, "/personas", "personas")] == ["Flo"]
    nightly = await ok(await client.get(f"{API}/workflows/nightly", headers=b))
    assert nightly["spec"]["steps"][0]["with"] == SPEC_V1["steps"][0]["with"]

    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"kind": "header", "data": {"format": "edrs-export", "version": 1}}\n{oops\n')
    code, _, err = await edrs(fleet, b, "import", str(bad), state_dir=tmp_path)
    assert code == 2
    assert "line 2: is not JSON" in err
    code, out, err = await edrs(fleet, b, "import", "--lenient", str(bad), state_dir=tmp_path)
    assert code == 1
    assert "imported 0, unchanged 0, failed 1" in out
    assert "line 2 (): invalid_json" in err
    code, _, err = await edrs(
        fleet, await fleet.login(await fleet.new_tenant(), "member"), "export", state_dir=tmp_path
    )
    assert code == 1 and "error:" in err


async def test_an_export_that_breaks_off_says_so_and_is_refused_by_import(fleet, client) -> None:
    """A second gateway on the same stores whose task service is unreachable: the personas are
    exported, then the stream ends with an `error` line instead of the footer."""
    admin = await admin_of_new_tenant(fleet)
    await ok(
        await client.post(f"{API}/personas", json={"name": "Gus", "role": "ops"}, headers=admin),
        201,
    )
    rt = fleet.gateway.runner.runtime
    assert rt is not None
    current = rt.settings
    async with running_service(
        gateway_definition,
        database_url=current.database_url,
        redis_url=current.redis_url,
        bus_url=current.bus_url,
        # Nothing listens there.
        peers={**current.peers, "task": f"127.0.0.1:{free_port()}"},
        key_encryption_secret=KEY_SECRET,
    ) as broken:
        reply = await client.get(
            f"{broken.http_url}{API}/export", params={"kinds": "personas,tasks"}, headers=admin
        )
        # CSV cannot say it broke off: read whole first, so the failure is the answer's status.
        table = await client.get(
            f"{broken.http_url}{API}/export", params={"kinds": "tasks", "format": "csv"},
            headers=admin,
        )  # fmt: skip
    assert table.status_code in (502, 503, 504), table.text
    assert table.json()["code"] in ("upstream_unavailable", "upstream_timeout")
    assert reply.status_code == 200
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert [r["kind"] for r in lines] == ["header", "persona", "error"]
    assert lines[-1]["data"]["code"] in ("upstream_unavailable", "upstream_timeout")

    refused = await client.post(f"{API}/import", content=reply.content, headers={**admin, **NDJSON})
    assert refused.status_code == 422, refused.text
    assert [(e["line"], e["code"]) for e in refused.json()["errors"]] == [(3, "incomplete_export")]


async def test_a_document_without_text_is_listed_as_skipped_in_the_footer(fleet, client) -> None:
    admin = await admin_of_new_tenant(fleet)
    await ok(
        await client.post(f"{API}/knowledge/collections", json={"name": "scans"}, headers=admin),
        201,
    )
    upload = await ok(
        await client.post(
            f"{API}/knowledge/collections/scans/files",
            files={"file": ("broken.pdf", b"%PDF-1.7\nnot really a pdf", "application/pdf")},
            headers=admin,
        ),
        202,
    )
    document_id = upload["document"]["id"]

    async def failed() -> bool:
        reply = await client.get(f"{API}/knowledge/documents/{document_id}", headers=admin)
        return bool(reply.json()["state"] == "failed")

    await wait_until(failed, INDEXED_WITHIN, "the broken PDF to fail")
    lines = await export_of(client, admin, kinds="documents")
    assert [r["kind"] for r in lines] == ["header", "collection", "footer"]
    assert lines[-1]["data"]["records"] == 1
    assert [(s["kind"], s["id"]) for s in lines[-1]["data"]["skipped"]] == [
        ("document", document_id)
    ]
