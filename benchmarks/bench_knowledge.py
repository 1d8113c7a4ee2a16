"""Knowledge benchmark: ingestion throughput by format, and search latency per mode at scale.

Run `python benchmarks/bench_knowledge.py [--sizes 10000,100000] [--queries 200]`. It starts
embedded PostgreSQL (pgvector) and NATS, and the reasoning and knowledge services as processes
(the real embedding model), then measures:

- ingestion: documents made here (PDF with fpdf2, DOCX with python-docx, HTML, Markdown) sent as
  one import job per format, timed until the job is done: documents/s, pages/s (PDF), passages/s,
  and the knowledge service's peak memory. Everything runs: parsing, chunking, `Embed`, the
  vector and keyword indexes.
- search: `Search` over gRPC at N passages (10,000 by default) in each mode, the query's
  embedding included, p50/p95. The passages (Markdown of this repository's docs and code, cut by
  the service's chunker; `--distinct`, 1,000 by default, since embedding them is what takes time
  on a small CPU) are embedded by reasoning's `Embed` and written to the service's tables and
  vector index directly, and the keyword index is rebuilt from them at start-up (timed). N is
  reached with copies of them in further collections, all searched at once.
  Baseline in the same run: the bare indexes with the same query (pgvector SQL with the adapter's
  HNSW settings, tantivy's searcher on the service's folder) and the bare `Embed` call.

It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import random
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
from _harness import POSTGRES_SETTINGS, Service, peak_rss, percentiles, service
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.testing import tenant_metadata, tenant_of
from edrs_knowledge.chunking import Chunker
from edrs_knowledge.keyword import query_words
from edrs_knowledge.parsing import parse_document
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_vectors import IndexSpec, VectorRecord, open_vector_index
from pgvector.asyncpg import register_vector

REPO = Path(__file__).resolve().parents[1]
TENANT = tenant_metadata("bench-tenant")
WORDS = [
    "policy",
    "travel",
    "budget",
    "approval",
    "invoice",
    "contract",
    "supplier",
    "warehouse",
    "shipment",
    "customer",
    "refund",
    "laptop",
    "badge",
    "security",
    "incident",
    "backup",
    "database",
    "replica",
    "latency",
    "region",
    "quota",
    "release",
    "rollout",
    "feature",
    "flag",
    "review",
    "meeting",
    "agenda",
    "decision",
    "owner",
    "deadline",
    "risk",
    "audit",
    "report",
    "revenue",
    "forecast",
    "hiring",
    "onboarding",
    "training",
    "benefit",
    "leave",
    "expense",
    "hotel",
    "flight",
]


def line(name: str, samples: list[float], extra: str = "") -> None:
    p = percentiles(samples)
    print(f"  {name:<40} p50 {p['p50']:8.2f} ms   p95 {p['p95']:8.2f} ms   {extra}")


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
        for _ in range(sentences)
    )


# --- documents of each format ------------------------------------------------------------------


def make_pdf(rng: random.Random, pages: int) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    for page in range(pages):
        document.add_page()
        document.set_font("helvetica", "B", size=16)
        document.multi_cell(0, 10, f"Section {page + 1}")
        document.ln(3)
        document.set_font("helvetica", size=11)
        for _ in range(3):
            document.multi_cell(0, 6, prose(rng, 5))
            document.ln(3)
    return bytes(document.output())


def make_docx(rng: random.Random) -> bytes:
    import docx

    document = docx.Document()
    for section in range(5):
        document.add_heading(f"Section {section + 1}", level=1)
        for _ in range(3):
            document.add_paragraph(prose(rng, 5))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_html(rng: random.Random) -> bytes:
    body = "".join(
        f"<h2>Section {s + 1}</h2>" + "".join(f"<p>{prose(rng, 5)}</p>" for _ in range(3))
        for s in range(5)
    )
    return (
        f"<!doctype html><html><head><title>Page</title></head><body><nav>Home</nav>"
        f"<main><article><h1>Handbook</h1>{body}</article></main></body></html>"
    ).encode()


def make_markdown(rng: random.Random) -> bytes:
    return "\n\n".join(
        f"## Section {s + 1}\n\n" + "\n\n".join(prose(rng, 5) for _ in range(3)) for s in range(5)
    ).encode()


async def ingestion(knowledge: Service, per_format: int, pdf_pages: int) -> None:
    rng = random.Random(5)
    corpora: dict[str, tuple[str, list[bytes]]] = {
        "pdf": (".pdf", [make_pdf(rng, pdf_pages) for _ in range(per_format)]),
        "docx": (".docx", [make_docx(rng) for _ in range(per_format)]),
        "html": (".html", [make_html(rng) for _ in range(per_format)]),
        "markdown": (".md", [make_markdown(rng) for _ in range(per_format)]),
    }
    print(
        f"ingestion: {per_format} documents per format, one import job each (PDF: {pdf_pages} pages)"
    )
    async with grpc.aio.insecure_channel(knowledge.grpc_address) as channel:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        for fmt, (extension, files) in corpora.items():
            collection = await stub.CreateCollection(
                pb.CreateCollectionRequest(name=f"ingest-{fmt}"), metadata=TENANT, timeout=30
            )

            async def messages(
                files: list[bytes] = files, name: str = collection.name, extension: str = extension
            ) -> Any:
                yield pb.ImportDocumentsRequest(header=pb.ImportHeader(collection=name))
                for i, data in enumerate(files):
                    yield pb.ImportDocumentsRequest(
                        document=pb.IngestDocumentRequest(content=data, filename=f"d{i}{extension}")
                    )

            with peak_rss({"knowledge": knowledge.process.pid}) as peak:
                started = time.perf_counter()
                job = await stub.ImportDocuments(messages(), metadata=TENANT, timeout=300)
                while job.state != pb.IMPORT_JOB_STATE_DONE:
                    await asyncio.sleep(0.2)
                    job = await stub.GetImportJob(
                        pb.GetImportJobRequest(id=job.id), metadata=TENANT, timeout=30
                    )
                took = time.perf_counter() - started
            listed = await stub.ListDocuments(
                pb.ListDocumentsRequest(collection=collection.name, page={"page_size": 200}),
                metadata=TENANT,
                timeout=30,
            )
            pages = sum(d.page_count for d in listed.documents)
            chunks = sum(d.chunk_count for d in listed.documents)
            rate = f"{pages / took:7.1f} pages/s" if pages else " " * 15
            print(
                f"  {fmt:<9} {job.indexed:4d} indexed {job.failed} failed  "
                f"{job.indexed / took:6.2f} docs/s  {rate}  {chunks / took:7.1f} passages/s  "
                f"peak {peak['knowledge']:6.0f} MiB"
            )


# --- search at scale ---------------------------------------------------------------------------


def repository_passages(limit: int) -> list[tuple[str, str, list[str]]]:
    """(document title, passage text, heading path) from this repository's Markdown and Python
    files, cut by the service's own parser and chunker."""
    chunker = Chunker()
    out: list[tuple[str, str, list[str]]] = []
    files = sorted(REPO.glob("docs/**/*.md")) + sorted(REPO.glob("services/*/src/**/*.py"))
    files += sorted(REPO.glob("libs/*/src/**/*.py"))
    for path in files:
        try:
            parsed = parse_document(path.read_bytes(), filename=path.with_suffix(".md").name)
        except Exception:
            continue
        for c in chunker.chunk(parsed):
            out.append((str(path.relative_to(REPO)), c.text, list(c.heading_path)))
            if len(out) >= limit:
                return out
    return out


async def embed_all(reasoning: Service, texts: list[str]) -> list[list[float]]:
    vectors: list[list[float]] = []
    async with grpc.aio.insecure_channel(reasoning.grpc_address) as channel:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(channel)
        for start in range(0, len(texts), 64):
            reply = await stub.Embed(
                reasoning_pb2.EmbedRequest(texts=texts[start : start + 64]),
                metadata=TENANT,
                timeout=300,
            )
            vectors += [list(e.values) for e in reply.embeddings]
    return vectors


async def load(
    dsn: str, size: int, passages: list[tuple[str, str, list[str]]], vectors: list[list[float]]
) -> list[str]:
    """Write `size` passages (copies of `passages` in further collections) as the service would:
    collections, documents, versions, chunks, and the vector index. Returns the collections."""
    tenant = tenant_of(TENANT)
    conn = await asyncpg.connect(dsn)
    index = await open_vector_index("pgvector", dsn, IndexSpec("knowledge_chunks", 384))
    collections: list[str] = []
    written = 0
    copy = 0
    while written < size:
        collection = uuid.uuid4()
        collections.append(str(collection))
        await conn.execute(
            "INSERT INTO collections (id, client_id, name) VALUES ($1, $2, $3)",
            collection,
            tenant,
            f"scale-{copy}",
        )
        take = passages[: size - written]
        by_document: dict[str, list[int]] = {}
        for i, (title, _, _) in enumerate(take):
            by_document.setdefault(title, []).append(i)
        chunk_rows, records = [], []
        for title, indexes in by_document.items():
            document = uuid.uuid4()
            texts = [take[i][1] for i in indexes]
            text = "\n\n".join(texts)
            await conn.execute(
                "INSERT INTO documents (id, client_id, collection_id, title) VALUES ($1,$2,$3,$4)",
                document,
                tenant,
                collection,
                title,
            )
            await conn.execute(
                """INSERT INTO document_versions (client_id, document_id, version, title, state,
                       content_hash, size_bytes, format, text, text_length, chunk_count)
                   VALUES ($1, $2, 1, $3, 'indexed', $4, $5, 'markdown', $6, $7, $8)""",
                tenant,
                document,
                title,
                hashlib.sha256(text.encode()).hexdigest(),
                len(text.encode()),
                text,
                len(text),
                len(indexes),
            )
            offset = 0
            for n, i in enumerate(indexes):
                chunk = uuid.uuid4()
                body = take[i][1]
                chunk_rows.append(
                    (
                        chunk,
                        tenant,
                        collection,
                        document,
                        1,
                        n,
                        body,
                        offset,
                        offset + len(body),
                        len(body.split()),
                        take[i][2],
                        None,
                        hashlib.sha256(body.encode()).hexdigest(),
                    )
                )
                records.append(
                    VectorRecord(chunk, vectors[i], tenant, str(collection), str(document))
                )
                offset += len(body) + 2
        await conn.executemany(
            """INSERT INTO chunks (id, client_id, collection_id, document_id, version, chunk_index,
                   text, start_offset, end_offset, token_count, heading_path, page, content_hash)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)""",
            chunk_rows,
        )
        for start in range(0, len(records), 1000):
            await index.upsert(records[start : start + 1000])
        written += len(take)
        copy += 1
    await index.close()
    await conn.close()
    return collections


def queries_from(passages: list[tuple[str, str, list[str]]], count: int) -> list[str]:
    rng = random.Random(9)
    out = []
    while len(out) < count:
        words = rng.choice(passages)[1].split()
        if len(words) < 12:
            continue
        start = rng.randrange(0, len(words) - 8)
        out.append(" ".join(words[start : start + 8]))
    return out


async def searches(
    knowledge: Service,
    reasoning: Service,
    dsn: str,
    keyword_dir: Path,
    collections: list[str],
    queries: list[str],
) -> None:
    import tantivy

    tenant = tenant_of(TENANT)
    async with (
        grpc.aio.insecure_channel(knowledge.grpc_address) as kc,
        grpc.aio.insecure_channel(reasoning.grpc_address) as rc,
    ):
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(kc)
        embedder = reasoning_pb2_grpc.ReasoningServiceStub(rc)
        for query in queries[:5]:  # warm up every path once
            for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_VECTOR, pb.SEARCH_MODE_KEYWORD):
                await stub.Search(
                    pb.SearchRequest(query=query, mode=mode), metadata=TENANT, timeout=60
                )
        for name, mode in (
            ("Search hybrid (k=10)", pb.SEARCH_MODE_HYBRID),
            ("Search vector (k=10)", pb.SEARCH_MODE_VECTOR),
            ("Search keyword (k=10)", pb.SEARCH_MODE_KEYWORD),
        ):
            took = []
            for query in queries:
                started = time.perf_counter()
                await stub.Search(
                    pb.SearchRequest(query=query, mode=mode), metadata=TENANT, timeout=60
                )
                took.append(time.perf_counter() - started)
            line(name, took)

        # The baseline: the same work on the bare engines, no service in between.
        embed_took, vectors = [], []
        for query in queries:
            started = time.perf_counter()
            reply = await embedder.Embed(
                reasoning_pb2.EmbedRequest(texts=[query]), metadata=TENANT, timeout=60
            )
            embed_took.append(time.perf_counter() - started)
            vectors.append(np.array(reply.embeddings[0].values, dtype=np.float32))
    conn = await asyncpg.connect(
        dsn,
        server_settings={
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.ef_search": "100",
            "plan_cache_mode": "force_custom_plan",
        },
    )
    await register_vector(conn)
    vector_took = []
    for vector in vectors:
        started = time.perf_counter()
        await conn.fetch(
            "SELECT id FROM vectors_knowledge_chunks WHERE tenant = $2 AND collection = ANY($3) "
            "ORDER BY embedding <=> $1 LIMIT 50",
            vector,
            tenant,
            collections,
        )
        vector_took.append(time.perf_counter() - started)
    await conn.close()
    index = tantivy.Index.open(str(keyword_dir))
    searcher = index.searcher()
    schema = index.schema
    scope = tantivy.Query.const_score_query(
        tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "tenant", tenant)),
                (
                    tantivy.Occur.Must,
                    tantivy.Query.term_set_query(schema, "collection", collections),
                ),
            ]
        ),
        0.0,
    )
    keyword_took = []
    for query in queries:
        started = time.perf_counter()
        text, _ = index.parse_query_lenient(query_words(query), ["title", "text"])
        full = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, text), (tantivy.Occur.Must, scope)]
        )
        hits = searcher.search(full, 50, count=False).hits
        [searcher.doc(address)["chunk_id"] for _, address in hits]
        keyword_took.append(time.perf_counter() - started)
    line("bare: Embed of the query", embed_took)
    line("bare: pgvector top 50 (same HNSW settings)", vector_took)
    line("bare: tantivy top 50", keyword_took)
    line(
        "bare: embed + both, one after the other",
        [a + b + c for a, b, c in zip(embed_took, vector_took, keyword_took, strict=True)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="passage counts to measure search at")
    parser.add_argument("--queries", type=int, default=200, help="queries per mode and size")
    parser.add_argument(
        "--distinct",
        type=int,
        default=1000,
        help="distinct passages embedded; larger sizes are copies in further collections",
    )
    parser.add_argument("--documents", type=int, default=10, help="documents per format to ingest")
    parser.add_argument("--pdf-pages", type=int, default=6, help="pages of each PDF")
    parser.add_argument("--parts", default="ingestion,search", help="what to measure")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-knowledge-")))
        postgres = stack.enter_context(
            EmbeddedPostgres(root / "postgres", settings=POSTGRES_SETTINGS)
        )
        nats = stack.enter_context(EmbeddedNats(root / "nats"))
        common = {"BUS_URL": nats.url()}
        reasoning = stack.enter_context(
            service(
                "reasoning",
                {**common, "DATABASE_URL": postgres.url("bench_reasoning")},
                root,
                start_within=300,
            )
        )

        def knowledge(database: str, keyword_dir: Path) -> Any:
            return service(
                "knowledge",
                {
                    **common,
                    "DATABASE_URL": postgres.url(database),
                    "PEERS": json.dumps({"reasoning": reasoning.grpc_address}),
                    "RPC_TIMEOUT_SECONDS": "120",
                    "STARTUP_TIMEOUT_SECONDS": "1800",
                    "KEYWORD_INDEX_DIR": str(keyword_dir),
                },
                root,
                start_within=1800,
            )

        if "ingestion" in args.parts:
            with knowledge("bench_knowledge_ingest", root / "keywords-ingest") as svc:
                asyncio.run(ingestion(svc, args.documents, args.pdf_pages))
        if "search" not in args.parts:
            return
        passages = repository_passages(min(max(sizes), args.distinct))
        print(f"search: {len(passages):,} distinct passages of this repository, embedding them")
        started = time.perf_counter()
        vectors = asyncio.run(embed_all(reasoning, [p[1] for p in passages]))
        print(f"  embedded in {time.perf_counter() - started:.1f} s")
        for size in sizes:
            database = f"bench_knowledge_{size}"
            # A first start creates the schema and the vector table.
            with knowledge(database, root / f"keywords-{size}-empty"):
                pass
            dsn = postgres.url(database)
            collections = asyncio.run(load(dsn, size, passages, vectors))
            started = time.perf_counter()
            keyword_dir = root / f"keywords-{size}"
            with knowledge(database, keyword_dir) as svc:
                print(
                    f"{size:,} passages in {len(collections)} collection(s), every one searched; "
                    f"keyword index rebuilt and service ready in {time.perf_counter() - started:.1f} s"
                )
                asyncio.run(
                    searches(
                        svc,
                        reasoning,
                        dsn,
                        keyword_dir,
                        collections,
                        queries_from(passages, args.queries),
                    )
                )


if __name__ == "__main__":
    main()
