"""`edrs knowledge` against a real gateway in front of the real knowledge service (and reasoning's
real embedding model), each command run as a user runs it, in its own process: ingest files and
folders (summary, unchanged on a second run, failures with why), collections, documents, search,
delete; and the errors a user can meet."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from edrs_cli import knowledge as knowledge_cli
from edrs_cli.knowledge import KnowledgeError, files_of
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
from fpdf import FPDF

PASSWORD = "correct horse battery staple"


@dataclass
class Gateway:
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[Gateway]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_knowledge_cli_{service}",
            redis_db=redis_db,
        )

    async with (
        running_service(
            reasoning_definition, start_timeout=180.0, **engines("reasoning", 14)
        ) as reasoning,
        running_service(
            knowledge_definition,
            peers={"reasoning": reasoning.grpc_address},
            **engines("knowledge", 14),
        ) as knowledge,
        running_service(
            gateway_definition,
            peers={"knowledge": knowledge.grpc_address},
            key_encryption_secret="test-key-encryption-secret-0123456789",
            **engines("gateway", 15),
        ) as svc,
    ):
        rt = svc.runner.runtime
        assert rt is not None
        ctx = GatewayContext.build(rt.settings, rt)
        tenant = await ctx.tenants.create(NewTenant(name=f"T {uuid.uuid4().hex[:10]}"))
        email = f"kb-{uuid.uuid4().hex[:8]}@example.com"
        await ctx.users.create(
            tenant.id,
            email=email,
            display_name="kb",
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
    """Run `edrs knowledge <args>` in its own process against the test gateway."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        "knowledge",
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


def pdf(text: str) -> bytes:
    document = FPDF()
    document.set_font("helvetica", size=12)
    document.add_page()
    document.multi_cell(0, 10, text)
    return bytes(document.output())


def library(root: Path) -> Path:
    """A folder as a user has one: Markdown, a PDF, a text file in a subfolder, a hidden file
    (skipped) and a PDF that is no PDF."""
    folder = root / "library"
    (folder / "guides").mkdir(parents=True)
    (folder / "guides" / "vpn.md").write_text(
        "# VPN\n\nConnect to vpn.acme.example with the Acme client.\n"
    )
    (folder / "parking.pdf").write_bytes(pdf("Visitors park on level P3 of the north garage."))
    (folder / "guides" / "kitchen.txt").write_text("The kitchen closes at nine in the evening.\n")
    (folder / ".secret.md").write_text("# Hidden\n\nNot to be ingested.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a real PDF body")
    return folder


@pytest.mark.integration
@pytest.mark.slow
async def test_ingest_a_folder_then_again_then_search_list_and_delete(
    gateway: Gateway, tmp_path: Path
) -> None:
    folder = library(tmp_path)
    name = f"lib-{uuid.uuid4().hex[:8]}"
    code, out, err = await edrs(
        gateway, "ingest", str(folder), "--collection", name, state_dir=tmp_path
    )
    assert code == 1 and out, (out, err)  # one file failed
    assert out.splitlines()[0] == "ingested 3, unchanged 0, failed 1", (out, err)
    assert f"failed: {folder / 'broken.pdf'}: corrupt:" in out, out

    # The same folder again: nothing changed, nothing is done.
    code, out, err = await edrs(
        gateway, "ingest", str(folder), "--collection", name, "--json", state_dir=tmp_path
    )
    summary = json.loads(out)
    assert (summary["ingested"], summary["unchanged"]) == (0, 3), summary
    # A failed document is tried again: it fails again, with its reason.
    assert [f["path"] for f in summary["failed"]] == [str(folder / "broken.pdf")]
    assert code == 1

    # One file changed: only it is ingested again (a new version of the same document).
    (folder / "guides" / "vpn.md").write_text("# VPN\n\nConnect to vpn2.acme.example now.\n")
    (folder / "broken.pdf").unlink()
    code, out, _ = await edrs(
        gateway, "ingest", str(folder), "--collection", name, state_dir=tmp_path
    )
    assert out.splitlines()[0] == "ingested 1, unchanged 2, failed 0", out
    assert code == 0

    code, out, err = await edrs(gateway, "collections", "--json", state_dir=tmp_path)
    assert code == 0, err
    [listed] = [c for c in json.loads(out) if c["name"] == name]
    assert listed["documentCount"] == 4

    code, out, err = await edrs(
        gateway, "documents", "--collection", name, "--json", state_dir=tmp_path
    )
    assert code == 0, err
    documents = {d["externalId"]: d for d in json.loads(out)}
    assert set(documents) == {"guides/vpn.md", "guides/kitchen.txt", "parking.pdf", "broken.pdf"}
    assert documents["guides/vpn.md"]["version"] == 2
    assert documents["broken.pdf"]["state"] == "failed"
    code, out, _ = await edrs(gateway, "documents", "--collection", name, state_dir=tmp_path)
    assert "failed (corrupt" in out and "parking.pdf" in out

    code, out, err = await edrs(
        gateway, "search", "where do visitors park", "-c", name, "-k", "2", state_dir=tmp_path
    )
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("[1] ") and "page 1" in first, out
    assert "level P3" in out.splitlines()[1]

    parking = documents["parking.pdf"]["id"]
    code, out, err = await edrs(gateway, "delete", parking, state_dir=tmp_path)
    assert code == 0, err
    assert f"deleted document {parking}: 1 versions" in out
    code, out, err = await edrs(
        gateway, "delete", "--collection", name, "--yes", state_dir=tmp_path
    )
    assert code == 0, err
    assert f"deleted collection {name}: 3 documents" in out
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.url) as client:
        # A standard tenant: the CLI waited out 429s above, and so does this request.
        gone = await unthrottled(
            lambda: client.get(f"/api/v1/knowledge/collections/{name}", headers=gateway.headers)
        )
    assert gone.status_code == 404


@pytest.mark.integration
@pytest.mark.slow
async def test_ingest_explains_what_went_wrong(gateway: Gateway, tmp_path: Path) -> None:
    folder = library(tmp_path)
    name = f"err-{uuid.uuid4().hex[:8]}"
    code, _, err = await edrs(
        gateway, "ingest", str(tmp_path / "nowhere"), "-c", name, state_dir=tmp_path
    )
    assert code == 2 and "nowhere: no such file or folder" in err, err
    code, _, err = await edrs(
        gateway, "ingest", str(folder), "-c", name, "--no-create", state_dir=tmp_path
    )
    assert code == 2 and f"no collection {name!r}" in err, err
    code, _, err = await edrs(gateway, "ingest", str(folder), "-c", "Bad Name", state_dir=tmp_path)
    assert code == 2 and "name" in err, err
    code, _, err = await edrs(gateway, "search", "x", "-k", "0", state_dir=tmp_path)
    assert code == 2, err
    code, _, err = await edrs(gateway, "search", "x", "--filter", "novalue", state_dir=tmp_path)
    assert code == 2 and "KEY=VALUE" in err, err
    code, _, err = await edrs(gateway, "delete", state_dir=tmp_path)
    assert code == 2 and "not both" in err, err
    # Nothing was created by the refused runs.
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.url) as client:
        missing = await unthrottled(
            lambda: client.get(f"/api/v1/knowledge/collections/{name}", headers=gateway.headers)
        )
    assert missing.status_code == 404


@pytest.mark.integration
@pytest.mark.slow
async def test_gaps_lists_the_questions_a_collection_answered_poorly(
    gateway: Gateway, tmp_path: Path
) -> None:
    folder = tmp_path / "kitchen"
    folder.mkdir()
    (folder / "kitchen.txt").write_text("The kitchen closes at nine in the evening.\n")
    name = f"gaps-{uuid.uuid4().hex[:8]}"
    code, out, err = await edrs(gateway, "ingest", str(folder), "-c", name, state_dir=tmp_path)
    assert code == 0, (out, err)
    for query in ("How do I renew my passport?", "how do i renew my PASSPORT", "kitchen closes"):
        code, _, err = await edrs(gateway, "search", query, "-c", name, state_dir=tmp_path)
        assert code == 0, err

    found: list[dict[str, object]] = []

    async def listed() -> bool:
        code, out, err = await edrs(gateway, "gaps", name, "--json", state_dir=tmp_path)
        assert code == 0, err
        found[:] = json.loads(out)
        return bool(found) and found[0]["count"] == 2

    # The knowledge service records each search after it answered.
    await wait_until(listed, 120, "the searches to be recorded")
    assert [g["normalizedQuery"] for g in found] == ["how do i renew my passport"]
    assert found[0]["askedFrom"] == ["api"] and found[0]["query"] == "how do i renew my PASSPORT"
    code, out, err = await edrs(gateway, "gaps", name, state_dir=tmp_path)
    assert code == 0, err
    assert "how do i renew my PASSPORT" in out and "api" in out
    # Under a threshold of 1, the well-answered question is listed too; --limit cuts the list.
    code, out, err = await edrs(
        gateway, "gaps", name, "--max-similarity", "1", "--json", state_dir=tmp_path
    )
    assert code == 0, err
    assert len(json.loads(out)) == 2
    code, out, err = await edrs(
        gateway,
        "gaps",
        name,
        "--max-similarity",
        "1",
        "--limit",
        "1",
        "--json",
        state_dir=tmp_path,
    )
    assert code == 0 and len(json.loads(out)) == 1, err
    code, _, err = await edrs(gateway, "gaps", f"no-{name}", state_dir=tmp_path)
    assert code == 1 and f"collection 'no-{name}' not found" in err, err
    code, _, err = await edrs(gateway, "gaps", name, "--days", "0", state_dir=tmp_path)
    assert code == 2, err


def test_files_of_walks_folders_and_names_each_file_by_its_path_inside(tmp_path: Path) -> None:
    folder = library(tmp_path)
    found = {f.external_id: f.path for f in files_of([folder])}
    assert set(found) == {"guides/vpn.md", "guides/kitchen.txt", "parking.pdf", "broken.pdf"}
    single = files_of([folder / "guides" / "vpn.md"], prefix="kb/")
    assert [f.external_id for f in single] == ["kb/vpn.md"]
    with pytest.raises(KnowledgeError, match=r"would both be externalId 'vpn\.md'"):
        files_of([folder / "guides" / "vpn.md", folder / "guides"])


def test_a_rate_limited_request_waits_its_retry_after_and_resends_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 is waited out as its Retry-After says and the request sent again, an upload with the
    whole file each time; a 429 that never ends is returned after the last try, not looped on."""
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"the whole file")
    bodies: list[bytes] = []
    refusals = iter(["2", "1"])

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        wait = next(refusals, None)
        if wait is not None:
            return httpx.Response(429, headers={"Retry-After": wait})
        return httpx.Response(202, json={"ok": True})

    slept: list[float] = []
    monkeypatch.setattr(knowledge_cli.time, "sleep", slept.append)
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://gw") as client:
        reply = knowledge_cli.send(
            client, "POST", "/upload", files={"file": ("notes.txt", upload, "text/plain")}
        )
    assert reply.status_code == 202
    assert slept == [2.0, 1.0]
    assert len(bodies) == 3 and all(b"the whole file" in body for body in bodies)

    slept.clear()
    with httpx.Client(
        transport=httpx.MockTransport(lambda _: httpx.Response(429)), base_url="http://gw"
    ) as client:
        reply = knowledge_cli.send(client, "GET", "/busy")
    assert reply.status_code == 429
    # No Retry-After: a second between tries, as many tries as the CLI allows.
    assert slept == [1.0] * knowledge_cli.RATE_LIMIT_RETRIES
