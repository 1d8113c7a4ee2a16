"""Documents of every supported format, made by the tests themselves with real writers
(fpdf2 for PDF, python-docx for DOCX), offered as fixtures."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from types import SimpleNamespace

import pytest

PAGE_THREE_SENTENCE = "The reimbursement limit for hotels in Lisbon is 190 euros per night."


def pdf(pages: list[list[tuple[str, str]]] | None = None, *, password: str | None = None) -> bytes:
    """A PDF whose pages hold (kind, text) items: "h" a 16-point bold heading, "p" a paragraph."""
    from fpdf import FPDF

    if pages is None:
        pages = policy_pages()
    document = FPDF()
    document.set_title("Acme travel policy")
    if password is not None:
        document.set_encryption(owner_password="owner-" + password, user_password=password)
    for items in pages:
        document.add_page()
        for kind, text in items:
            if kind == "h":
                document.set_font("helvetica", "B", size=16)
                document.multi_cell(0, 10, text)
                document.ln(3)
            else:
                document.set_font("helvetica", size=11)
                document.multi_cell(0, 6, text)
                document.ln(4)
    return bytes(document.output())


def policy_pages() -> list[list[tuple[str, str]]]:
    filler = (
        "Travel is booked through the portal at least fourteen days before departure, and a "
        "manager approves every trip abroad before anything is paid. "
    )
    return [
        [("h", "Travel policy"), ("p", filler * 3), ("p", "Trains are preferred under 600 km.")],
        [("h", "Flights"), ("p", "Economy class for flights under six hours. " + filler)],
        [
            ("h", "Hotels"),
            ("p", "Hotels are booked through the portal. " + PAGE_THREE_SENTENCE),
            ("p", "Breakfast is included; the minibar is not reimbursed."),
        ],
    ]


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.title = "Onboarding handbook"
    document.add_heading("Onboarding handbook", level=0)
    document.add_paragraph("Welcome to Acme. This handbook covers your first weeks.")
    document.add_heading("Equipment", level=1)
    document.add_paragraph("Laptops are issued on the first day.")
    document.add_heading("Security keys", level=2)
    document.add_paragraph("Every engineer receives two hardware security keys.")
    document.add_paragraph("Register both keys.", style="List Bullet")
    document.add_paragraph("Keep one at home.", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Item", "Owner"
    table.cell(1, 0).text, table.cell(1, 1).text = "Laptop", "IT desk"
    document.add_heading("Benefits", level=1)
    document.add_paragraph("Health insurance starts on day one.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


HTML = """<!doctype html>
<html><head><title>Expense rules | Acme intranet</title></head><body>
<nav><a href="/">Home</a> | <a href="/people">People</a> | <a href="/careers">Careers</a></nav>
<header><p>Acme intranet — internal use only</p></header>
<main><article>
<h1>Expense rules</h1>
<p>Expenses are filed within thirty days with a receipt. Late claims need a director's approval.</p>
<h2>Meals</h2>
<p>Client dinners are reimbursed up to 80 euros a person, wine included, when a client attends.</p>
<ul><li>Keep the itemised receipt.</li><li>Name the client on the claim.</li></ul>
<table><tr><th>Country</th><th>Daily allowance</th></tr>
<tr><td>Portugal</td><td>45</td></tr><tr><td>Germany</td><td>55</td></tr></table>
</article></main>
<footer><p>Copyright 2026 Acme Corp. All rights reserved. Privacy policy. Terms of use.</p></footer>
</body></html>
"""

MARKDOWN = """# Runbook

How the on-call engineer handles an outage.

## Paging

Pages go to the primary first, then to the secondary after **five minutes**.

- Acknowledge within `5` minutes.
- Open an incident channel.
  - Name it after the date.

## Recovery

### Databases

Restore from the latest snapshot; check replication lag before failing back.

```sh
pg_restore --clean latest.dump
```
"""


def encrypted_office_file() -> bytes:
    """The start of what Office writes for a password-protected DOCX: an OLE compound file with
    an "EncryptedPackage" stream (its directory entry names it in UTF-16)."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    directory = "EncryptedPackage".encode("utf-16-le") + b"\x00" * 96
    return header + directory + b"\x00" * 1024


def corrupt_docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types")
        archive.writestr("word/document.xml", "<w:document><w:body><w:p>")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def documents() -> SimpleNamespace:
    """The builders and texts above, for tests to call with their own content."""
    return SimpleNamespace(
        pdf=pdf,
        policy_pages=policy_pages,
        docx=docx,
        html=HTML,
        markdown=MARKDOWN,
        encrypted_office_file=encrypted_office_file,
        corrupt_docx=corrupt_docx,
        page_three_sentence=PAGE_THREE_SENTENCE,
    )


PdfMaker = Callable[..., bytes]


# The running service, on the real reasoning service (its Embed RPC), both started once for the
# knowledge tests (package scope: the models are released before the next directory's tests run).


@pytest.fixture(scope="package")
async def reasoning(postgres_engine, redis_engine, nats_engine):  # type: ignore[no-untyped-def]
    from edrs_core import testing
    from edrs_reasoning.app import definition as reasoning_definition

    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_knowledge_reasoning", redis_db=11
    )
    # Loading the models takes a while on a small CPU.
    async with testing.running_service(reasoning_definition, start_timeout=300, **settings) as svc:
        yield svc


@pytest.fixture(scope="package")
def start_knowledge(postgres_engine, redis_engine, nats_engine, reasoning, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Starts a knowledge service on the vector engine named (a context manager); each start gets
    its own database and keyword-index folder. `overrides` are settings (`peers` too)."""
    import contextlib

    from edrs_core import testing
    from edrs_knowledge.app import definition

    @contextlib.asynccontextmanager
    async def start(database: str, engine: str = "pgvector", **overrides):  # type: ignore[no-untyped-def]
        folder = tmp_path_factory.mktemp(f"knowledge-{engine}")
        vector_url = {
            "pgvector": "",
            "milvus": str(folder / "milvus.db"),
            "qdrant": f"path:{folder / 'qdrant'}",
        }[engine]
        settings = testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=3
        )
        values = {
            "peers": {"reasoning": reasoning.grpc_address},
            "rpc_timeout_seconds": 120.0,
            "vector_engine": engine,
            "vector_url": vector_url,
            "keyword_index_dir": str(folder / "keywords"),
            **settings,
            **overrides,
        }
        async with testing.running_service(definition, start_timeout=120, **values) as svc:
            yield svc

    return start


@pytest.fixture(scope="package")
async def knowledge(start_knowledge):  # type: ignore[no-untyped-def]
    async with start_knowledge("test_knowledge") as svc:
        yield svc


# What the service tests do again and again, offered as the `kit` fixture.


async def _new_collection(stub, tenant=None) -> str:  # type: ignore[no-untyped-def]
    import uuid

    from edrs_core import testing
    from edrs_proto.knowledge.v1 import knowledge_pb2 as pb

    created = await stub.CreateCollection(
        pb.CreateCollectionRequest(name=f"c-{uuid.uuid4().hex[:12]}"),
        metadata=tenant or testing.tenant_metadata("tenant-a"),
    )
    return str(created.name)


async def _ingest(stub, collection: str, *, tenant=None, **fields):  # type: ignore[no-untyped-def]
    from edrs_core import testing
    from edrs_proto.knowledge.v1 import knowledge_pb2 as pb

    return await stub.IngestDocument(
        pb.IngestDocumentRequest(collection=collection, **fields),
        metadata=tenant or testing.tenant_metadata("tenant-a"),
    )


async def _wait_indexed(stub, document_id: str, *, tenant=None, state=None, within=300.0):  # type: ignore[no-untyped-def]
    """The document once it reaches `state` (INDEXED by default); fails on another end state."""
    from edrs_core import testing
    from edrs_proto.knowledge.v1 import knowledge_pb2 as pb

    wanted = state or pb.DOCUMENT_STATE_INDEXED
    ends = {pb.DOCUMENT_STATE_INDEXED, pb.DOCUMENT_STATE_FAILED}
    latest = None

    async def reached() -> bool:
        nonlocal latest
        latest = await stub.GetDocument(
            pb.GetDocumentRequest(id=document_id),
            metadata=tenant or testing.tenant_metadata("tenant-a"),
        )
        if latest.state in ends and latest.state != wanted:
            raise AssertionError(f"document {document_id} ended {latest.state}: {latest.failure}")
        return bool(latest.state == wanted)

    await testing.wait_until(reached, within, f"document {document_id} to be indexed")
    return latest


async def _cut(stub, passage, *, tenant=None) -> str:  # type: ignore[no-untyped-def]
    """The stored document text between the passage citation's offsets."""
    from edrs_core import testing
    from edrs_proto.knowledge.v1 import knowledge_pb2 as pb

    read = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(
            document_id=passage.document_id, version=passage.citation.document_version
        ),
        metadata=tenant or testing.tenant_metadata("tenant-a"),
    )
    return str(read.text[passage.citation.start : passage.citation.end])


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    from edrs_core import testing

    return SimpleNamespace(
        tenant_a=testing.tenant_metadata("tenant-a"),
        tenant_b=testing.tenant_metadata("tenant-b"),
        new_collection=_new_collection,
        ingest=_ingest,
        wait_indexed=_wait_indexed,
        cut=_cut,
    )
