"""`/api/v1/knowledge` through a real gateway in front of the real knowledge service (real
embeddings from the reasoning service, pgvector, the keyword index): collections, documents as
text, files and bulk imports, states, versions, search with citations, the graph; bad input,
DLP, idempotency, permissions and tenant isolation; and a persona with a collection attached,
answering from it with citations (the real model)."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from edrs_core.engines.ports import free_port
from edrs_core.testing import running_service, wait_until
from edrs_gateway.app import definition as gateway_definition
from edrs_persona.app import definition as persona_definition
from fpdf import FPDF
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = "/api/v1/knowledge"
# Ingestion embeds with the real sentence model on two shared cores.
INDEXED_WITHIN = 180.0


@pytest.fixture(scope="module")
async def tenant(conversation_fleet) -> uuid.UUID:
    return await conversation_fleet.new_tenant()


@pytest.fixture(scope="module")
async def member(conversation_fleet, tenant) -> dict[str, str]:
    return await conversation_fleet.login(tenant, "member")


@pytest.fixture
async def client(conversation_fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=conversation_fleet.url, timeout=120) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def new_collection(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict:
    reply = await client.post(f"{K}/collections", headers=headers, json={"name": name})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def settled(
    client: httpx.AsyncClient, headers: dict[str, str], document_id: str
) -> dict[str, Any]:
    """The document once it is indexed or failed."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        reply = await client.get(f"{K}/documents/{document_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        found.update(reply.json())
        return found["state"] in ("indexed", "failed")

    await wait_until(done, INDEXED_WITHIN, f"document {document_id} to be indexed or fail")
    return found


def pdf_bytes(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


async def test_collections_are_created_listed_read_by_id_or_name_and_deleted(
    client, member
) -> None:
    name = unique("handbook")
    reply = await client.post(
        f"{K}/collections", headers=member, json={"name": name, "description": "Policies"}
    )
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert reply.headers["Location"] == f"{K}/collections/{created['id']}"
    assert created["name"] == name and created["description"] == "Policies"
    assert created["documentCount"] == 0

    twice = await client.post(f"{K}/collections", headers=member, json={"name": name})
    assert (twice.status_code, twice.json()["code"]) == (409, "already_exists")
    for ref in (name, created["id"]):
        got = await client.get(f"{K}/collections/{ref}", headers=member)
        assert got.status_code == 200 and got.json()["id"] == created["id"], got.text
    listed = await client.get(f"{K}/collections", headers=member)
    assert created["id"] in {c["id"] for c in listed.json()["collections"]}

    gone = await client.delete(f"{K}/collections/{name}", headers=member)
    assert gone.status_code == 200, gone.text
    assert gone.json()["documentsDeleted"] == 0
    assert (await client.get(f"{K}/collections/{name}", headers=member)).status_code == 404


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "Has Spaces"}, "/name"),
        ({"name": ""}, "/name"),
        ({"name": "x" * 64}, "/name"),
        ({"name": "ok", "description": "d" * 2001}, "/description"),
        ({"name": "ok", "extra": 1}, "/extra"),
    ],
)
async def test_a_bad_collection_is_refused_naming_the_field(client, member, body, pointer) -> None:
    reply = await client.post(f"{K}/collections", headers=member, json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["pointer"] == pointer


async def test_text_is_ingested_updated_by_external_id_and_left_alone_when_unchanged(
    client, member
) -> None:
    collection = await new_collection(client, member, unique("faq"))
    path = f"{K}/collections/{collection['name']}/documents"
    body = {
        "externalId": "faq/vpn",
        "title": "VPN access",
        "text": "# VPN\n\nConnect with the Acme VPN client.\n\n## Server\n\nThe server is "
        "vpn.acme.example on port 1194.",
        "metadata": {"team": "it"},
    }
    first = await client.post(path, headers=member, json=body)
    assert first.status_code == 202, first.text
    assert first.json()["outcome"] == "created"
    document = first.json()["document"]
    assert first.headers["Location"] == f"{K}/documents/{document['id']}"
    assert document["state"] in ("queued", "parsing", "embedding", "indexed")
    assert (document["externalId"], document["version"]) == ("faq/vpn", 1)
    indexed = await settled(client, member, document["id"])
    assert indexed["state"] == "indexed", indexed
    assert indexed["failure"] is None and indexed["chunkCount"] >= 1
    assert indexed["metadata"] == {"team": "it"}

    again = await client.post(path, headers=member, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "unchanged"
    assert again.json()["document"]["version"] == 1

    changed = await client.post(
        path, headers=member, json={**body, "text": body["text"].replace("1194", "443")}
    )
    assert changed.status_code == 202, changed.text
    assert changed.json()["outcome"] == "updated"
    assert changed.json()["document"]["id"] == document["id"]
    assert (await settled(client, member, document["id"]))["version"] == 2
    versions = await client.get(f"{K}/documents/{document['id']}/versions", headers=member)
    assert [v["version"] for v in versions.json()["versions"]] == [2, 1]
    latest = versions.json()["versions"][0]
    # Only the passage that changed was embedded again.
    assert latest["chunksReused"] >= 1 and latest["chunksEmbedded"] >= 1
    text = await client.get(f"{K}/documents/{document['id']}/text", headers=member)
    assert "port 443" in text.json()["text"] and "1194" not in text.json()["text"]

    by_external = await client.get(
        f"{K}/documents",
        params={"collection": collection["name"], "externalId": "faq/vpn"},
        headers=member,
    )
    assert [d["id"] for d in by_external.json()["documents"]] == [document["id"]]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/text"),
        ({"text": ""}, "/text"),
        ({"text": "x", "title": "a\nb"}, "/title"),
        ({"text": "x", "externalId": "e" * 501}, "/externalId"),
        ({"text": "x", "metadata": {"k": 1}}, "/metadata/k"),
        ({"text": "x", "metadata": {f"k{i}": "v" for i in range(51)}}, "/metadata"),
        ({"text": "x", "contentType": "application/pdf"}, "/contentType"),
    ],
)
async def test_bad_text_documents_are_refused_naming_the_field(
    client, member, body, pointer
) -> None:
    collection = await new_collection(client, member, unique("bad"))
    reply = await client.post(
        f"{K}/collections/{collection['id']}/documents", headers=member, json=body
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["pointer"] == pointer
    listed = await client.get(
        f"{K}/documents", params={"collection": collection["id"]}, headers=member
    )
    assert listed.json()["documents"] == []


async def test_a_document_into_a_missing_collection_is_404(client, member) -> None:
    reply = await client.post(
        f"{K}/collections/no-such-collection/documents", headers=member, json={"text": "x"}
    )
    assert reply.status_code == 404, reply.text


async def test_files_upload_with_their_format_read_from_the_bytes(client, member) -> None:
    collection = await new_collection(client, member, unique("files"))
    path = f"{K}/collections/{collection['id']}/files"
    pages = [
        "Page one is about the cafeteria.",
        "Page two is about parking.",
        "On page three: the Orion vault opens with code 7391.",
    ]
    reply = await client.post(
        path,
        headers=member,
        files={"file": ("manual.pdf", pdf_bytes(pages), "application/pdf")},
        data={"externalId": "manual", "metadata": json.dumps({"kind": "manual"})},
    )
    assert reply.status_code == 202, reply.text
    document = await settled(client, member, reply.json()["document"]["id"])
    assert document["state"] == "indexed", document
    assert (document["format"], document["pageCount"]) == ("pdf", 3)
    assert document["metadata"] == {"kind": "manual"}

    found = await client.post(
        f"{K}/search",
        headers=member,
        json={"query": "Orion vault code", "collections": [collection["name"]], "k": 3},
    )
    assert found.status_code == 200, found.text
    top = found.json()["passages"][0]
    assert "7391" in top["text"] and top["citation"]["page"] == 3, top
    # The citation's offsets cut exactly that passage out of the stored text.
    cut = await client.get(
        f"{K}/documents/{document['id']}/text",
        params={"start": top["citation"]["startOffset"], "end": top["citation"]["endOffset"]},
        headers=member,
    )
    assert cut.json()["text"] == top["text"]

    # A name that lies about the bytes fails that document alone, with the reason.
    lying = await client.post(
        path,
        headers=member,
        files={"file": ("notes.docx", pdf_bytes(["not a docx"]), "application/octet-stream")},
    )
    assert lying.status_code == 202, lying.text
    failed = await settled(client, member, lying.json()["document"]["id"])
    assert failed["state"] == "failed"
    assert failed["failure"]["code"] == "format_mismatch", failed


async def test_upload_bad_form_fields_are_refused(client, member) -> None:
    collection = await new_collection(client, member, unique("form"))
    path = f"{K}/collections/{collection['id']}/files"
    no_file = await client.post(path, headers=member, data={"title": "x"})
    assert no_file.status_code == 422, no_file.text
    assert no_file.json()["errors"][0]["pointer"] == "/file"
    bad_metadata = await client.post(
        path,
        headers=member,
        files={"file": ("a.md", b"# A\n\ntext", "text/markdown")},
        data={"metadata": "[1, 2]"},
    )
    assert bad_metadata.status_code == 422, bad_metadata.text
    assert bad_metadata.json()["errors"][0]["pointer"] == "/metadata"


async def test_uploads_may_be_100_mb_and_a_larger_body_is_413_naming_the_limit(
    conversation_fleet, member, api_of
) -> None:
    assert conversation_fleet.ctx.settings.knowledge_max_upload_bytes == 100 * 1024 * 1024
    # Other routes keep the general limit.
    assert conversation_fleet.ctx.settings.max_body_bytes == 10 * 1024 * 1024
    async with api_of(
        conversation_fleet.gateway, knowledge_max_upload_bytes=50_000, max_body_bytes=20_000
    ) as small:
        collection = await new_collection(small, member, unique("big"))
        path = f"{K}/collections/{collection['id']}/files"
        fits = await small.post(
            path,
            headers=member,
            files={"file": ("a.md", b"# Big\n\n" + b"word " * 8_000, "text/markdown")},
        )
        assert fits.status_code == 202, fits.text  # 40 kB: over the general limit, under this

        head = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n'
            b"Content-Type: text/markdown\r\n\r\n"
        )

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            yield head
            for _ in range(20):
                yield b"x" * 5_000

        for content in (head + b"x" * 60_000, streamed()):
            refused = await small.post(
                path,
                headers={**member, "Content-Type": "multipart/form-data; boundary=b"},
                content=content,
            )
            assert refused.status_code == 413, refused.text
            assert refused.json()["code"] == "payload_too_large"
            assert refused.json()["limit"] == 50_000
        listed = await small.get(
            f"{K}/documents", params={"collection": collection["id"]}, headers=member
        )
        assert len(listed.json()["documents"]) == 1  # only the one that fitted


def ndjson(documents: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in documents)


async def job_done(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> dict:
    found: dict[str, Any] = {}

    async def done() -> bool:
        reply = await client.get(f"{K}/imports/{job_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        found.update(reply.json())
        return found["state"] == "done"

    await wait_until(done, 600.0, f"import job {job_id} to finish")
    return found


async def test_a_bulk_import_of_thousands_runs_as_a_job_whose_progress_is_followed(
    client, member
) -> None:
    collection = await new_collection(client, member, unique("bulk"))
    documents = [
        {"externalId": f"kb/{i}", "title": f"Article {i}", "text": f"Article {i} covers topic {i}."}
        for i in range(2000)
    ]
    reply = await client.post(
        f"{K}/collections/{collection['name']}/imports",
        headers={**member, "Content-Type": "application/x-ndjson"},
        content=ndjson(documents),
    )
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert reply.headers["Location"] == f"{K}/imports/{job['id']}"
    assert job["total"] == 2000 and job["collectionId"] == collection["id"]
    done = await job_done(client, member, job["id"])
    assert (done["indexed"], done["failed"], done["pending"]) == (2000, 0, 0), done
    assert done["finishedAt"] is not None
    items = await client.get(
        f"{K}/imports/{job['id']}/items", params={"pageSize": 3}, headers=member
    )
    assert [i["position"] for i in items.json()["items"]] == [0, 1, 2]
    assert items.json()["items"][0]["externalId"] == "kb/0"
    jobs = await client.get(f"{K}/imports", params={"collection": collection["id"]}, headers=member)
    assert [j["id"] for j in jobs.json()["jobs"]] == [job["id"]]

    # The same import as a JSON array, one document changed and one unreadable file added.
    documents[5]["text"] = "Article 5 now covers something else."
    documents.append({"externalId": "kb/broken", "filename": "x.pdf", "contentBase64": "JVBERi0x"})
    again = await client.post(
        f"{K}/collections/{collection['name']}/imports", headers=member, json=documents
    )
    assert again.status_code == 202, again.text
    done = await job_done(client, member, again.json()["id"])
    assert (done["unchanged"], done["indexed"], done["failed"]) == (1999, 1, 1), done
    failed = await client.get(
        f"{K}/imports/{done['id']}/items", params={"failedOnly": "true"}, headers=member
    )
    [item] = failed.json()["items"]
    assert item["externalId"] == "kb/broken" and item["failure"]["code"] in ("corrupt", "empty")


@pytest.mark.parametrize(
    ("content", "media", "pointer"),
    [
        (b'{"text": "ok"}\n{"text": ""}\n', "application/x-ndjson", "/1/text"),
        (b'{"text": "ok"}\nnot json\n', "application/x-ndjson", ""),
        (b'[{"text": "ok"}, {"title": "no body"}]', "application/json", "/1"),
        (b'[{"text": "a", "contentBase64": "eA=="}]', "application/json", "/0"),
        (b'[{"contentBase64": "***"}]', "application/json", "/0/contentBase64"),
        (
            b'[{"externalId": "a", "text": "1"}, {"externalId": "a", "text": "2"}]',
            "application/json",
            "/1/externalId",
        ),
        (b"[]", "application/json", ""),
        (b'{"text": "not an array"}', "application/json", ""),
    ],
)
async def test_a_bad_import_is_refused_naming_the_document_and_stores_nothing(
    client, member, content, media, pointer
) -> None:
    collection = await new_collection(client, member, unique("badimport"))
    reply = await client.post(
        f"{K}/collections/{collection['id']}/imports",
        headers={**member, "Content-Type": media},
        content=content,
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["pointer"] == pointer
    listed = await client.get(
        f"{K}/documents", params={"collection": collection["id"]}, headers=member
    )
    assert listed.json()["documents"] == []


async def test_an_import_in_another_media_type_is_415(client, member) -> None:
    collection = await new_collection(client, member, unique("csv"))
    reply = await client.post(
        f"{K}/collections/{collection['id']}/imports",
        headers={**member, "Content-Type": "text/csv"},
        content=b"a,b\n",
    )
    assert (reply.status_code, reply.json()["code"]) == (415, "unsupported_media_type")


async def test_dlp_redacts_text_documents_text_files_and_ndjson_imports_and_blocks_under_block(
    conversation_fleet, client, member
) -> None:
    collection = await new_collection(client, member, unique("dlp"))
    posted = await client.post(
        f"{K}/collections/{collection['id']}/documents",
        headers=member,
        json={"text": "Write to ann@example.com for access."},
    )
    assert posted.status_code == 202, posted.text
    uploaded = await client.post(
        f"{K}/collections/{collection['id']}/files",
        headers=member,
        files={"file": ("contacts.txt", b"Ask carl@example.com first.", "text/plain")},
    )
    assert uploaded.status_code == 202, uploaded.text
    imported = await client.post(
        f"{K}/collections/{collection['id']}/imports",
        headers={**member, "Content-Type": "application/x-ndjson"},
        content=ndjson([{"externalId": "n1", "text": "Call bob@example.com today."}]),
    )
    assert imported.status_code == 202, imported.text
    await job_done(client, member, imported.json()["id"])
    docs = (
        await client.get(f"{K}/documents", params={"collection": collection["id"]}, headers=member)
    ).json()["documents"]
    stored = []
    for d in docs:
        await settled(client, member, d["id"])
        text = await client.get(f"{K}/documents/{d['id']}/text", headers=member)
        stored.append(text.json()["text"].strip())
    assert sorted(stored) == [
        "Ask [REDACTED:email] first.",
        "Call [REDACTED:email] today.",
        "Write to [REDACTED:email] for access.",
    ], stored

    strict = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", strict
    )
    admin = await conversation_fleet.login(strict, "admin")
    blocked = await new_collection(client, admin, unique("strict"))
    card = "card 4111 1111 1111 1111"
    for route, kwargs, pointer in (
        ("documents", {"json": {"text": card}}, "/text"),
        (
            "imports",
            {
                "content": ndjson([{"text": "fine"}, {"text": card}]),
                "headers": {"Content-Type": "application/x-ndjson"},
            },
            "/1/text",
        ),
        ("files", {"files": {"file": ("card.md", card.encode(), "text/markdown")}}, "/file"),
    ):
        headers = {**admin, **kwargs.pop("headers", {})}
        refused = await client.post(
            f"{K}/collections/{blocked['id']}/{route}", headers=headers, **kwargs
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "sensitive_data_blocked"
        assert refused.json()["errors"][0]["pointer"] == pointer
    nothing = await client.get(
        f"{K}/documents", params={"collection": blocked["id"]}, headers=admin
    )
    assert nothing.json()["documents"] == []


async def test_files_the_gateway_cannot_read_pass_dlp_in_the_knowledge_service(
    conversation_fleet, client, member
) -> None:
    """A PDF (uploaded, or imported as contentBase64) is text only the knowledge service reads:
    the gateway sends the tenant's policy with it. Redact: the stored text and the document's
    `redactions` say what went; block: the document fails `sensitive_data_blocked`. An upload's
    form fields are scanned at the gateway, as a JSON body is."""
    secret = "Payroll questions go to pay.desk@example.com, never elsewhere."
    collection = await new_collection(client, member, unique("dlp-files"))
    uploaded = await client.post(
        f"{K}/collections/{collection['id']}/files",
        headers=member,
        files={"file": ("payroll.pdf", pdf_bytes([secret]), "application/pdf")},
        data={"title": "From lead@example.com"},
    )
    assert uploaded.status_code == 202, uploaded.text
    imported = await client.post(
        f"{K}/collections/{collection['id']}/imports",
        headers=member,
        json=[
            {
                "externalId": "pdf-1",
                "contentBase64": base64.b64encode(pdf_bytes([secret])).decode(),
                "filename": "payroll.pdf",
            }
        ],
    )
    assert imported.status_code == 202, imported.text
    await job_done(client, member, imported.json()["id"])
    listed = await client.get(
        f"{K}/documents",
        params={"collection": collection["id"], "externalId": "pdf-1"},
        headers=member,
    )
    assert listed.status_code == 200, listed.text
    imported_id = listed.json()["documents"][0]["id"]
    for document_id in (uploaded.json()["document"]["id"], imported_id):
        document = await settled(client, member, document_id)
        assert document["state"] == "indexed", document
        assert document["redactions"] == {"email": 1}, document
        text = (await client.get(f"{K}/documents/{document_id}/text", headers=member)).json()
        assert "pay.desk@example.com" not in text["text"]
        assert "[REDACTED:email]" in text["text"]
    titled = await client.get(f"{K}/documents/{uploaded.json()['document']['id']}", headers=member)
    assert titled.json()["title"] == "From [REDACTED:email]"

    strict = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", strict
    )
    admin = await conversation_fleet.login(strict, "admin")
    blocked = await new_collection(client, admin, unique("dlp-strict"))
    sent = await client.post(
        f"{K}/collections/{blocked['id']}/files",
        headers=admin,
        files={"file": ("payroll.pdf", pdf_bytes([secret]), "application/pdf")},
    )
    assert sent.status_code == 202, sent.text
    failed = await settled(client, admin, sent.json()["document"]["id"])
    assert failed["state"] == "failed" and failed["failure"]["code"] == "sensitive_data_blocked"
    assert "email" in failed["failure"]["message"]
    assert "pay.desk" not in failed["failure"]["message"]
    refused = await client.post(
        f"{K}/collections/{blocked['id']}/files",
        headers=admin,
        files={"file": ("notes.pdf", pdf_bytes(["nothing to hide"]), "application/pdf")},
        data={"title": "From lead@example.com"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "sensitive_data_blocked"
    assert refused.json()["errors"][0]["pointer"] == "/title"


async def test_an_idempotency_key_replays_the_first_answer(client, member) -> None:
    collection = await new_collection(client, member, unique("idem"))
    headers = {**member, "Idempotency-Key": unique("key")}
    path = f"{K}/collections/{collection['id']}/documents"
    first = await client.post(path, headers=headers, json={"text": "Only once."})
    second = await client.post(path, headers=headers, json={"text": "Only once."})
    assert first.status_code == second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    listed = await client.get(
        f"{K}/documents", params={"collection": collection["id"]}, headers=member
    )
    assert len(listed.json()["documents"]) == 1


async def test_search_modes_filters_and_scores(client, member) -> None:
    collection = await new_collection(client, member, unique("search"))
    texts = {
        "penguins": ("Penguins live in Antarctica and eat krill.", {"topic": "birds"}),
        "volcano": ("Mount Etna is an active volcano in Sicily.", {"topic": "geology"}),
        "tea": ("Green tea is brewed at about eighty degrees.", {"topic": "food"}),
    }
    for external_id, (text, metadata) in texts.items():
        reply = await client.post(
            f"{K}/collections/{collection['id']}/documents",
            headers=member,
            json={"externalId": external_id, "text": text, "metadata": metadata},
        )
        await settled(client, member, reply.json()["document"]["id"])

    async def top(**body: Any) -> list[dict[str, Any]]:
        reply = await client.post(
            f"{K}/search",
            headers=member,
            json={"query": "volcano in Sicily", "collections": [collection["id"]], **body},
        )
        assert reply.status_code == 200, reply.text
        return list(reply.json()["passages"])

    for mode in ("hybrid", "vector", "keyword"):
        found = await top(mode=mode)
        assert found[0]["externalId"] == "volcano", (mode, found)
    hybrid = (await top())[0]
    assert hybrid["scores"]["vectorRank"] == 1 and hybrid["scores"]["keywordRank"] == 1
    assert hybrid["scores"]["vector"] > 0 and hybrid["scores"]["keyword"] > 0
    assert len(hybrid["citation"]["contentHash"]) == 64
    assert len(await top(k=1)) == 1
    filtered = await top(filters={"topic": ["birds", "food"]})
    assert {p["externalId"] for p in filtered} <= {"penguins", "tea"} and filtered
    assert await top(filters={"topic": "none-such"}) == []

    for bad, pointer in (
        ({"query": ""}, "/query"),
        ({"query": "x", "k": 0}, "/k"),
        ({"query": "x", "k": 101}, "/k"),
        ({"query": "x", "mode": "fuzzy"}, "/mode"),
        ({"query": "x", "filters": {f"k{i}": "v" for i in range(21)}}, "/filters"),
    ):
        reply = await client.post(f"{K}/search", headers=member, json=bad)
        assert reply.status_code == 422, reply.text
        assert reply.json()["errors"][0]["pointer"] == pointer
    missing = await client.post(
        f"{K}/search", headers=member, json={"query": "x", "collections": ["no-such"]}
    )
    assert missing.status_code == 404, missing.text


async def test_documents_are_listed_by_state_and_deleted_with_what_derives_from_them(
    client, member
) -> None:
    collection = await new_collection(client, member, unique("delete"))
    added = await client.post(
        f"{K}/collections/{collection['id']}/documents",
        headers=member,
        json={"text": "Acme Corp acquired Globex in 2024."},
    )
    document = await settled(client, member, added.json()["document"]["id"])
    indexed = await client.get(
        f"{K}/documents",
        params={"collection": collection["id"], "state": "indexed"},
        headers=member,
    )
    assert [d["id"] for d in indexed.json()["documents"]] == [document["id"]]
    failed = await client.get(
        f"{K}/documents", params={"collection": collection["id"], "state": "failed"}, headers=member
    )
    assert failed.json()["documents"] == []
    no_collection = await client.get(f"{K}/documents", params={"externalId": "x"}, headers=member)
    assert no_collection.status_code == 422
    assert no_collection.json()["errors"][0]["pointer"] == "/collection"

    gone = await client.delete(f"{K}/documents/{document['id']}", headers=member)
    assert gone.status_code == 200, gone.text
    counts = gone.json()
    assert counts["versionsDeleted"] == 1
    assert counts["chunksDeleted"] == counts["vectorsDeleted"] == document["chunkCount"] >= 1
    assert (await client.get(f"{K}/documents/{document['id']}", headers=member)).status_code == 404
    again = await client.delete(f"{K}/documents/{document['id']}", headers=member)
    assert again.status_code == 404
    bad_id = await client.get(f"{K}/documents/not-a-uuid", headers=member)
    assert bad_id.status_code == 422


async def test_the_graph_routes_answer_for_the_callers_tenant_only(
    conversation_fleet, client
) -> None:
    admin = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    entities = await client.get(f"{K}/graph/entities", headers=admin)
    assert entities.status_code == 200, entities.text
    assert entities.json() == {"entities": [], "nextPageToken": ""}
    for path in (
        f"{K}/graph/entities/{uuid.uuid4()}",
        f"{K}/graph/entities/{uuid.uuid4()}/neighbourhood",
    ):
        missing = await client.get(path, headers=admin)
        assert missing.status_code == 404, missing.text
    bad = await client.get(f"{K}/graph/entities/not-a-uuid", headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/entityId"
    unknown = await client.get(
        f"{K}/graph/entities", params={"collection": "no-such-collection"}, headers=admin
    )
    assert unknown.status_code == 404, unknown.text


async def test_viewers_read_but_do_not_write(conversation_fleet, client, tenant, member) -> None:
    collection = await new_collection(client, member, unique("viewer"))
    viewer = await conversation_fleet.login(tenant, "viewer")
    assert (
        await client.get(f"{K}/collections/{collection['id']}", headers=viewer)
    ).status_code == 200
    for method, path, body in (
        ("POST", f"{K}/collections", {"name": unique("v")}),
        ("POST", f"{K}/collections/{collection['id']}/documents", {"text": "x"}),
        ("DELETE", f"{K}/collections/{collection['id']}", None),
    ):
        reply = await client.request(method, path, headers=viewer, json=body)
        assert reply.status_code == 403, (path, reply.text)
    anonymous = await client.get(f"{K}/collections")
    assert anonymous.status_code == 401


async def test_another_tenant_sees_none_of_it(conversation_fleet, client, member) -> None:
    name = unique("private")
    collection = await new_collection(client, member, name)
    added = await client.post(
        f"{K}/collections/{name}/documents",
        headers=member,
        json={"externalId": "secret", "text": "The launch code word is BLUEBIRD."},
    )
    document = await settled(client, member, added.json()["document"]["id"])
    job = (
        await client.post(
            f"{K}/collections/{name}/imports", headers=member, json=[{"text": "imported"}]
        )
    ).json()
    entity_ids = [
        e["id"]
        for e in (
            await client.get(f"{K}/graph/entities", params={"collection": name}, headers=member)
        ).json()["entities"]
    ]

    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    # The same name is free in another tenant: names are per tenant.
    theirs = await new_collection(client, stranger, name)
    assert theirs["id"] != collection["id"]
    for method, path, body in [
        ("GET", f"{K}/collections/{collection['id']}", None),
        ("DELETE", f"{K}/collections/{collection['id']}", None),
        ("POST", f"{K}/collections/{collection['id']}/documents", {"text": "intrusion"}),
        ("POST", f"{K}/collections/{collection['id']}/imports", [{"text": "intrusion"}]),
        ("GET", f"{K}/documents/{document['id']}", None),
        ("GET", f"{K}/documents/{document['id']}/versions", None),
        ("GET", f"{K}/documents/{document['id']}/text", None),
        ("DELETE", f"{K}/documents/{document['id']}", None),
        ("GET", f"{K}/imports/{job['id']}", None),
        ("GET", f"{K}/imports/{job['id']}/items", None),
        *[("GET", f"{K}/graph/entities/{e}", None) for e in entity_ids],
        *[("GET", f"{K}/graph/entities/{e}/neighbourhood", None) for e in entity_ids],
    ]:
        reply = await client.request(method, path, headers=stranger, json=body)
        assert reply.status_code == 404, (method, path, reply.status_code, reply.text)
    for mode in ("hybrid", "vector", "keyword"):
        found = await client.post(
            f"{K}/search", headers=stranger, json={"query": "launch code word", "mode": mode}
        )
        assert found.status_code == 200, found.text
        assert all("BLUEBIRD" not in p["text"] for p in found.json()["passages"]), mode
    mine = await client.get(f"{K}/documents", headers=stranger)
    assert document["id"] not in {d["id"] for d in mine.json()["documents"]}
    # Nothing of the owner's changed.
    still = await client.get(f"{K}/documents/{document['id']}", headers=member)
    assert still.status_code == 200 and still.json()["version"] == 1


# -- a persona answering from its collections -------------------------------------------------

PERSONA = {
    "name": "Vera",
    "role": "operations assistant",
    "instructions": "Answer in one short sentence, from your sources.",
}
# The answer is in the document only: nothing else the model is given holds it.
VAULT = (
    "# Vault access\n\nThe Orion vault on level B2 opens with the access code 7391. Only the "
    "night shift may open it.\n\n# Canteen\n\nThe canteen serves lunch from noon to two."
)
QUESTION = "What is the access code of the Orion vault?"
OPTIONS = {"maxTokens": 24, "temperature": 0.0}


@pytest.fixture(scope="module")
async def vault(conversation_fleet, member) -> dict[str, Any]:
    """A collection holding the vault document, indexed; and a persona attached to it by name."""
    async with httpx.AsyncClient(base_url=conversation_fleet.url, timeout=120) as client:
        name = unique("ops")
        collection = await new_collection(client, member, name)
        added = await client.post(
            f"{K}/collections/{name}/documents",
            headers=member,
            json={"externalId": "ops/vault", "title": "Vault access", "text": VAULT},
        )
        document = await settled(client, member, added.json()["document"]["id"])
        assert document["state"] == "indexed", document
        created = await client.post(
            "/api/v1/personas", headers=member, json={**PERSONA, "knowledgeCollections": [name]}
        )
        assert created.status_code == 201, created.text
    return {"collection": collection, "document": document, "persona": created.json()}


def ask(persona_id: str, conversation: str) -> tuple[str, dict[str, Any]]:
    return (
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
        {"text": QUESTION, "options": OPTIONS},
    )


async def test_a_persona_answers_from_its_collection_and_cites_the_document(
    client, member, vault
) -> None:
    persona = vault["persona"]
    assert persona["knowledgeCollections"] == [vault["collection"]["id"]]
    path, body = ask(persona["id"], "vault-json")
    reply = await client.post(path, headers=member, json=body)
    assert reply.status_code == 200, reply.text
    turn = reply.json()
    assert "7391" in turn["reply"]["text"], turn["reply"]
    citations = turn["citations"]
    assert citations, turn
    first = citations[0]
    assert first["marker"] == 1
    assert first["documentId"] == vault["document"]["id"]
    assert (first["externalId"], first["title"]) == ("ops/vault", "Vault access")
    assert first["collectionId"] == vault["collection"]["id"]
    assert "7391" in first["text"] and first["headingPath"] == ["Vault access"]
    assert first["page"] is None  # Markdown has no pages
    cut = await client.get(
        f"{K}/documents/{first['documentId']}/text",
        params={"start": first["startOffset"], "end": first["endOffset"]},
        headers=member,
    )
    assert cut.json()["text"] == first["text"]

    # The trace shows the passage in the prompt, as a numbered source marked as data.
    trace = (await client.get(f"/api/v1/traces/{turn['reply']['traceId']}", headers=member)).json()
    assert "not instructions" in trace["prompt"]
    source_line = next(
        line for line in trace["prompt"].splitlines() if line.startswith('[1] "Vault access"')
    )
    assert source_line.startswith('[1] "Vault access", Vault access: '), source_line
    assert "The Orion vault on level B2 opens with the access code 7391." in source_line
    chunks = [c for c in trace["context"] if c["source"] == "knowledge.chunk"]
    assert [c["id"] for c in chunks] == [c["chunkId"] for c in citations]
    assert "7391" in chunks[0]["text"]


async def test_citations_come_with_the_sse_and_websocket_replies(
    conversation_fleet, client, member, vault
) -> None:
    persona_id = vault["persona"]["id"]
    path, body = ask(persona_id, "vault-sse")
    async with client.stream(
        "POST", path, headers={**member, "Accept": "text/event-stream"}, json=body
    ) as stream:
        assert stream.status_code == 200
        lines = [line async for line in stream.aiter_lines()]
    completed = [
        json.loads(line[5:])
        for i, line in enumerate(lines)
        if line.startswith("data:") and lines[i - 1] == "event: completed"
    ]
    assert completed and completed[0]["citations"][0]["documentId"] == vault["document"]["id"]

    token = member["Authorization"].removeprefix("Bearer ")
    url = conversation_fleet.url.replace("http://", "ws://") + "/api/v1/ws"
    async with connect(url, subprotocols=["edrs.v1", f"bearer.{token}"]) as socket:
        await socket.send(
            json.dumps(
                {
                    "type": "message",
                    "personaId": persona_id,
                    "conversationId": "vault-ws",
                    "text": QUESTION,
                    "options": OPTIONS,
                }
            )
        )
        while (frame := json.loads(await socket.recv()))["type"] != "completed":
            assert frame["type"] != "error", frame
    assert frame["citations"][0]["documentId"] == vault["document"]["id"]


async def test_attaching_checks_each_collection_and_detaching_stops_the_citations(
    conversation_fleet, client, member, vault
) -> None:
    bad = await client.post(
        "/api/v1/personas",
        headers=member,
        json={**PERSONA, "knowledgeCollections": ["no-such-collection"]},
    )
    assert bad.status_code == 422, bad.text
    assert "no-such-collection" in bad.json()["detail"]
    twice = await client.post(
        "/api/v1/personas",
        headers=member,
        json={**PERSONA, "knowledgeCollections": ["a", "a"]},
    )
    assert (
        twice.status_code == 422 and twice.json()["errors"][0]["pointer"] == "/knowledgeCollections"
    )
    name, collection_id = vault["collection"]["name"], vault["collection"]["id"]
    by_name_and_id = await client.post(
        "/api/v1/personas",
        headers=member,
        json={**PERSONA, "knowledgeCollections": [name, collection_id]},
    )
    assert by_name_and_id.status_code == 422, by_name_and_id.text  # the same collection twice

    created = await client.post(
        "/api/v1/personas",
        headers=member,
        json={**PERSONA, "knowledgeCollections": [collection_id]},
    )
    persona_id = created.json()["id"]
    detached = await client.patch(
        f"/api/v1/personas/{persona_id}", headers=member, json={"knowledgeCollections": []}
    )
    assert detached.status_code == 200 and detached.json()["knowledgeCollections"] == []
    path, body = ask(persona_id, "detached")
    turn = (await client.post(path, headers=member, json=body)).json()
    assert turn["citations"] == []

    # Another tenant's collection cannot be attached, by name or by id.
    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    for ref in (name, collection_id):
        foreign = await client.post(
            "/api/v1/personas", headers=stranger, json={**PERSONA, "knowledgeCollections": [ref]}
        )
        assert foreign.status_code == 422, foreign.text


async def test_learning_gaps_list_the_poorly_answered_questions_of_api_and_turns(
    conversation_fleet, client, tenant, member, vault
) -> None:
    """Searches through `/search` and a persona's turn are recorded by the knowledge service;
    `/collections/{collection}/gaps` lists those answered poorly, grouped, with where they came
    from, for writers of the caller's tenant only."""
    name = vault["collection"]["name"]
    poor = "How do I configure the VPN on Linux?"
    for query in (poor, "how do I configure the vpn on LINUX"):
        found = await client.post(
            f"{K}/search", headers=member, json={"query": query, "collections": [name]}
        )
        assert found.status_code == 200, found.text
        assert max(p["scores"]["vector"] for p in found.json()["passages"]) < 0.5
    path, body = ask(vault["persona"]["id"], "vault-gaps")
    turn = await client.post(path, headers=member, json=body)
    assert turn.status_code == 200, turn.text

    gaps_path = f"{K}/collections/{name}/gaps"
    question = "what is the access code of the orion vault"
    vpn_key = "how do i configure the vpn on linux"
    listed: dict[str, Any] = {}

    async def recorded() -> bool:
        # Under a threshold of 1 every question is a gap, the persona's well-answered one too.
        reply = await client.get(gaps_path, headers=member, params={"maxSimilarity": 1.0})
        assert reply.status_code == 200, reply.text
        listed.clear()
        listed.update(reply.json())
        counts = {g["normalizedQuery"]: g["count"] for g in listed["gaps"]}
        return question in counts and counts.get(vpn_key) == 2

    # The knowledge service writes its search log after answering.
    await wait_until(recorded, 60, "the searches to be recorded")
    by_query = {g["normalizedQuery"]: g for g in listed["gaps"]}
    assert by_query[question]["askedFrom"] == ["turn"]
    vpn = by_query[vpn_key]
    assert (vpn["askedFrom"], vpn["noPassageCount"], vpn["query"]) == (
        ["api"],
        0,
        "how do I configure the vpn on LINUX",
    )
    assert listed["maxSimilarity"] == 1.0 and listed["windowDays"] == 30

    default = await client.get(gaps_path, headers=member)
    assert default.status_code == 200, default.text
    assert default.json()["maxSimilarity"] == 0.5
    assert vpn_key in [g["normalizedQuery"] for g in default.json()["gaps"]]
    assert all(g["bestSimilarity"] < 0.5 for g in default.json()["gaps"])
    one = await client.get(gaps_path, headers=member, params={"maxSimilarity": 1.0, "pageSize": 1})
    assert len(one.json()["gaps"]) == 1 and one.json()["nextPageToken"]
    rest = await client.get(
        gaps_path,
        headers=member,
        params={"maxSimilarity": 1.0, "pageSize": 200, "pageToken": one.json()["nextPageToken"]},
    )
    assert one.json()["gaps"] + rest.json()["gaps"] == listed["gaps"]

    for params, pointer in (
        ({"windowDays": 0}, "/windowDays"),
        ({"windowDays": 366}, "/windowDays"),
        ({"maxSimilarity": 1.5}, "/maxSimilarity"),
        ({"maxSimilarity": -1.5}, "/maxSimilarity"),
    ):
        bad = await client.get(gaps_path, headers=member, params=params)
        assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == pointer, bad.text
    missing = await client.get(f"{K}/collections/no-such-collection/gaps", headers=member)
    assert missing.status_code == 404, missing.text
    viewer = await conversation_fleet.login(tenant, "viewer")
    assert (await client.get(gaps_path, headers=viewer)).status_code == 403
    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    foreign = await client.get(
        f"{K}/collections/{vault['collection']['id']}/gaps", headers=stranger
    )
    assert foreign.status_code == 404, foreign.text


async def test_a_turn_answers_without_passages_when_knowledge_is_down(
    conversation_fleet, member, vault, caplog
) -> None:
    """A persona replica whose knowledge service cannot be reached, behind a gateway of its own:
    the turn still answers, with no citations, and the persona service logs why."""
    rt = conversation_fleet.gateway.runner.runtime
    settings = rt.settings
    peers = dict(settings.peers)
    persona_database = settings.database_url.rsplit("_gateway", 1)[0] + "_persona"
    async with (
        running_service(
            persona_definition,
            database_url=persona_database,
            redis_url=conversation_fleet.services_redis_url,
            bus_url=settings.bus_url,
            # Nothing listens there: every call to knowledge fails as UNAVAILABLE.
            peers={**peers, "knowledge": f"127.0.0.1:{free_port()}"},
            knowledge_timeout_seconds=2.0,
        ) as cut_off,
        running_service(
            gateway_definition,
            database_url=settings.database_url,
            redis_url=settings.redis_url,
            bus_url=settings.bus_url,
            peers={**peers, "persona": cut_off.grpc_address},
            key_encryption_secret="test-key-encryption-secret-0123456789",
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=120) as client,
    ):
        path, body = ask(vault["persona"]["id"], "vault-down")
        with caplog.at_level(logging.WARNING, logger="edrs.persona.knowledge"):
            reply = await client.post(path, headers=member, json=body)
    assert reply.status_code == 200, reply.text
    turn = reply.json()
    assert turn["reply"]["text"].strip() and turn["citations"] == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "edrs.persona.knowledge"]
    assert any(
        vault["persona"]["id"] in w and "without knowledge passages" in w and "UNAVAILABLE" in w
        for w in warnings
    ), warnings
