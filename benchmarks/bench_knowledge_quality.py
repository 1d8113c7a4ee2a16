"""Knowledge retrieval quality: nDCG@10 and recall@100 per search mode on the Python docs.

Run `python benchmarks/bench_knowledge_quality.py [--budget 1000000] [--concept 200] [--api 200]`.
The evaluation set comes from Debian's `python3.11-doc` (see `pydoc_eval`): sections of a seeded
sample of library reference pages are the corpus, entries of the documentation's general index
are the queries, and the sections an entry points at are its relevant documents (binary). The
package is downloaded once (`apt-get download`) and unpacked under `.edrs/bench-cache/`.

It starts embedded PostgreSQL (pgvector) and NATS, and the reasoning service (the real embedding
model) and the knowledge service as processes, ingests every section through the service's own
import (`ImportDocuments`: HTML parsing, chunking, `Embed`, both indexes; one document a section,
its `external_id` the section's key), then runs each query through `Search` over gRPC (the path
of `POST /api/v1/knowledge/search`) with k=100 in keyword, vector and hybrid mode. A returned
passage counts for its document's section; nDCG@10 and recall@100 are in `retrieval_metrics`.

The queries and their relevant sections are written to `benchmarks/data/pydoc_eval.json` by
`--write-set`; a run compares the set it builds with that file and says whether they agree.

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pydoc_eval
from _harness import POSTGRES_SETTINGS, Service, service
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.testing import tenant_metadata
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from retrieval_metrics import ndcg_at, recall_at

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".edrs" / "bench-cache"
SET_FILE = REPO / "benchmarks" / "data" / "pydoc_eval.json"
TENANT = tenant_metadata("bench-quality")
COLLECTION = "pydoc"
MODES = {
    "keyword": pb.SEARCH_MODE_KEYWORD,
    "vector": pb.SEARCH_MODE_VECTOR,
    "hybrid": pb.SEARCH_MODE_HYBRID,
}
# Hybrid once more on a service started with EDRS_KNOWLEDGE_GRAPH_EXPANSION=false: what the graph
# ranking adds or takes away.
NO_GRAPH = "hybrid-g"


def eval_set(
    budget: int, concept: int, api: int
) -> tuple[list[pydoc_eval.Section], list[pydoc_eval.Query]]:
    root = pydoc_eval.fetch_docs(CACHE)
    corpus, anchors = pydoc_eval.load_corpus(root, budget)
    queries = pydoc_eval.select_queries(
        pydoc_eval.index_entries(root), anchors, corpus, {"concept": concept, "api": api}
    )
    return corpus, queries


def set_as_json(
    budget: int, corpus: list[pydoc_eval.Section], queries: list[pydoc_eval.Query]
) -> dict[str, object]:
    return {
        "package": pydoc_eval.PACKAGE,
        "version": pydoc_eval.package_version(CACHE),
        "seed": pydoc_eval.SEED,
        "budget_chars": budget,
        "pages": sorted({s.key.partition("#")[0] for s in corpus}),
        "sections": len(corpus),
        "queries": [
            {"query": q.text, "kind": q.kind, "relevant": sorted(q.relevant)} for q in queries
        ],
    }


async def ingest(knowledge: Service, corpus: list[pydoc_eval.Section]) -> None:
    async with grpc.aio.insecure_channel(knowledge.grpc_address) as channel:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        await stub.CreateCollection(
            pb.CreateCollectionRequest(name=COLLECTION), metadata=TENANT, timeout=30
        )

        async def messages() -> AsyncIterator[pb.ImportDocumentsRequest]:
            yield pb.ImportDocumentsRequest(header=pb.ImportHeader(collection=COLLECTION))
            for section in corpus:
                yield pb.ImportDocumentsRequest(
                    document=pb.IngestDocumentRequest(
                        external_id=section.key,
                        text=section.html,
                        source=f"{pydoc_eval.PACKAGE}:{section.key}",
                    )
                )

        started = time.perf_counter()
        job = await stub.ImportDocuments(messages(), metadata=TENANT, timeout=600)
        while job.state != pb.IMPORT_JOB_STATE_DONE:
            await asyncio.sleep(1)
            job = await stub.GetImportJob(
                pb.GetImportJobRequest(id=job.id), metadata=TENANT, timeout=30
            )
        took = time.perf_counter() - started
        collection = await stub.GetCollection(
            pb.GetCollectionRequest(id=COLLECTION), metadata=TENANT, timeout=30
        )
        print(
            f"ingested {job.indexed} sections ({job.failed} failed) into "
            f"{collection.chunk_count:,} passages in {took:.0f} s "
            f"({collection.chunk_count / took:.1f} passages/s, parsing, chunking, Embed, indexes)"
        )
        if job.failed:
            failed = await stub.ListImportJobItems(
                pb.ListImportJobItemsRequest(job_id=job.id, failed_only=True),
                metadata=TENANT,
                timeout=30,
            )
            for item in failed.items[:5]:
                print(f"  failed: {item.external_id}: {item.failure.code}: {item.failure.message}")


Hit = tuple[str, str, float]  # passage id, its document's external id (a section), score
Rankings = dict[str, list[list[Hit]]]  # mode → one ranking per query, in `queries` order


async def search_all(
    knowledge: Service, queries: list[pydoc_eval.Query], modes: dict[str, int]
) -> Rankings:
    """Every query through `Search` in each of `modes`, k=100."""
    rankings: Rankings = {mode: [] for mode in modes}
    async with grpc.aio.insecure_channel(knowledge.grpc_address) as channel:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        for query in queries:
            for mode, value in modes.items():
                reply = await stub.Search(
                    pb.SearchRequest(query=query.text, collections=[COLLECTION], k=100, mode=value),
                    metadata=TENANT,
                    timeout=120,
                )
                rankings[mode].append(
                    [(p.chunk_id, p.external_id, p.score) for p in reply.passages]
                )
    return rankings


def offline_fusions(rankings: Rankings) -> Rankings:
    """Fusions of the keyword and vector rankings the service returned, computed here and not
    by the service: what another fusion function would give on the same candidates (100 each).

    - `rrf`: reciprocal rank fusion, K = 60, as the service fuses (a check: it should match the
      hybrid run without graph expansion);
    - `convex`: 0.5 * the min-max-normalised BM25 score + 0.5 * the min-max-normalised cosine
      similarity, each over its own 100 candidates, 0 where a ranking lacks the passage (the
      convex combination of Bruch, Gai and Ingber, 2023, untuned: equal weights)."""
    fused: Rankings = {"rrf": [], "convex": []}
    for keyword, vector in zip(rankings["keyword"], rankings["vector"], strict=True):
        section = {c: e for c, e, _ in keyword + vector}
        rrf: dict[str, float] = {}
        convex: dict[str, float] = {}
        for hits in (keyword, vector):
            for rank, (chunk, _, _) in enumerate(hits, start=1):
                rrf[chunk] = rrf.get(chunk, 0.0) + 1 / (60 + rank)
            if hits:
                low, high = min(h[2] for h in hits), max(h[2] for h in hits)
                for chunk, _, score in hits:
                    norm = (score - low) / (high - low) if high > low else 1.0
                    convex[chunk] = convex.get(chunk, 0.0) + 0.5 * norm
        for name, scores in (("rrf", rrf), ("convex", convex)):
            best = sorted(scores.items(), key=lambda s: (-s[1], s[0]))[:100]
            fused[name].append([(c, section[c], score) for c, score in best])
    return fused


def evaluate(
    queries: list[pydoc_eval.Query], rankings: Rankings
) -> dict[str, dict[str, list[float]]]:
    """mode → metric → one value per query (in `queries` order)."""
    results: dict[str, dict[str, list[float]]] = {}
    for mode, per_query in rankings.items():
        ndcg, recall = [], []
        for query, hits in zip(queries, per_query, strict=True):
            ranking = [section for _, section, _ in hits]
            ndcg.append(ndcg_at(ranking, query.relevant, 10))
            recall.append(recall_at(ranking, query.relevant, 100))
        results[mode] = {"ndcg": ndcg, "recall": recall}
    return results


def report(
    queries: list[pydoc_eval.Query],
    results: dict[str, dict[str, list[float]]],
    only: list[str] | None = None,
) -> None:
    groups = {"all": list(range(len(queries)))}
    for kind in sorted({q.kind for q in queries}):
        groups[kind] = [i for i, q in enumerate(queries) if q.kind == kind]
    for group, members in groups.items():
        if only is not None and group not in only:
            continue
        print(f"{group} queries ({len(members)}):")
        print(f"  {'mode':<8} {'nDCG@10':>8} {'recall@100':>11}")
        means: dict[str, dict[str, float]] = {}
        for mode in results:
            means[mode] = {
                metric: statistics.fmean(values[i] for i in members)
                for metric, values in results[mode].items()
            }
            print(f"  {mode:<8} {means[mode]['ndcg']:8.3f} {means[mode]['recall']:11.3f}")
        for fused in [m for m in ("hybrid", NO_GRAPH, "rrf", "convex") if m in results]:
            for other in ("keyword", "vector"):
                ratios = "  ".join(
                    f"{label} {means[fused][metric] / means[other][metric]:.2f}"
                    if means[other][metric]
                    else f"{label} n/a"
                    for metric, label in (("ndcg", "nDCG@10"), ("recall", "recall@100"))
                )
                hybrid, base = results[fused]["ndcg"], results[other]["ndcg"]
                wins = sum(hybrid[i] > base[i] for i in members)
                losses = sum(hybrid[i] < base[i] for i in members)
                print(
                    f"  {fused + '/' + other:<16} {ratios}   nDCG@10 per query: better on "
                    f"{wins}, worse on {losses}, equal on {len(members) - wins - losses}"
                )


def run(svc: Service, root: Path, work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`; when the service died under it, the end of its log says why."""
    try:
        return asyncio.run(work)
    except grpc.aio.AioRpcError:
        if svc.process.poll() is None:
            raise
        log = (root / f"{svc.name}.log").read_text(errors="replace")[-6000:]
        raise SystemExit(
            f"{svc.name} exited with {svc.process.returncode} during the run:\n{log}"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=int, default=1_000_000, help="characters of section text in the corpus"
    )
    parser.add_argument("--concept", type=int, default=200, help="queries from concept entries")
    parser.add_argument("--api", type=int, default=200, help="queries from API entries")
    parser.add_argument(
        "--write-set", action="store_true", help=f"write the set to {SET_FILE.relative_to(REPO)}"
    )
    args = parser.parse_args()

    corpus, queries = eval_set(args.budget, args.concept, args.api)
    built = set_as_json(args.budget, corpus, queries)
    pages = len(built["pages"])  # type: ignore[arg-type]
    chars = sum(s.text_length for s in corpus)
    print(
        f"corpus: {len(corpus):,} sections of {pages} library pages of {pydoc_eval.PACKAGE} "
        f"({chars:,} characters of text); {len(queries)} queries "
        + ", ".join(f"{sum(q.kind == k for q in queries)} {k}" for k in ("concept", "api"))
        + f"; relevant sections per query {min(len(q.relevant) for q in queries)} to "
        + f"{max(len(q.relevant) for q in queries)}; every content word of the query in a "
        + f"relevant section: {pydoc_eval.lexical_share(queries, corpus):.0%} of the queries"
    )
    if args.write_set:
        SET_FILE.parent.mkdir(parents=True, exist_ok=True)
        SET_FILE.write_text(json.dumps(built, indent=1, ensure_ascii=False) + "\n")
        print(f"  written to {SET_FILE.relative_to(REPO)}")
    elif SET_FILE.exists():
        shipped = json.loads(SET_FILE.read_text())
        same = shipped == built
        print(
            f"  the set {'equals' if same else 'DIFFERS FROM'} the shipped "
            f"{SET_FILE.relative_to(REPO)}"
        )

    # A service that crashes in native code leaves the Python stacks of its threads in its log.
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-quality-")))
        postgres = stack.enter_context(
            EmbeddedPostgres(root / "postgres", settings=POSTGRES_SETTINGS)
        )
        nats = stack.enter_context(EmbeddedNats(root / "nats"))
        common = {"BUS_URL": nats.url()}
        reasoning = stack.enter_context(
            service(
                "reasoning",
                # Ingestion embeds batches of 32 passages: both cores help there.
                {
                    **common,
                    "DATABASE_URL": postgres.url("bench_reasoning"),
                    "EMBEDDING_THREADS": "2",
                },
                root,
                start_within=300,
            )
        )
        settings = {
            **common,
            "DATABASE_URL": postgres.url("bench_knowledge_quality"),
            "PEERS": json.dumps({"reasoning": reasoning.grpc_address}),
            "RPC_TIMEOUT_SECONDS": "120",
            "KEYWORD_INDEX_DIR": str(root / "keywords"),
        }
        with service("knowledge", settings, root, start_within=300) as knowledge:
            run(knowledge, root, ingest(knowledge, corpus))
            started = time.perf_counter()
            rankings = run(knowledge, root, search_all(knowledge, queries, MODES))
        # The same database and keyword folder: the second start rebuilds nothing.
        no_graph = {**settings, "GRAPH_EXPANSION": "false"}
        with service("knowledge", no_graph, root, start_within=300) as knowledge:
            hybrid = {NO_GRAPH: pb.SEARCH_MODE_HYBRID}
            rankings |= run(knowledge, root, search_all(knowledge, queries, hybrid))
        print(
            f"searched {len(queries)} queries in {len(MODES) + 1} modes, k=100, in "
            f"{time.perf_counter() - started:.0f} s (restart included); relevance binary (a "
            f"section), a section gains at its first passage; {NO_GRAPH}: hybrid without graph "
            "expansion (EDRS_KNOWLEDGE_GRAPH_EXPANSION=false)"
        )
        report(queries, evaluate(queries, rankings))
        print(
            "offline fusions of the keyword and vector rankings above (computed here, not by "
            "the service; see offline_fusions):"
        )
        offline = {m: rankings[m] for m in ("keyword", "vector")} | offline_fusions(rankings)
        report(queries, evaluate(queries, offline), ["all"])


if __name__ == "__main__":
    main()
