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

The queries are split in a tuning half and a test half (SPLIT_SEED, per kind). A second set,
`benchmarks/data/pydoc_paraphrase.json`, holds hand-written questions on the same sections in
other words than theirs (a set where vectors beat keywords). Every mode is reported on the test
half, the tuning half and the paraphrase set; then fusions of the keyword and vector rankings
(FUSION_GRID, computed here with the service's own fusion functions) are scored on the tuning
half, and the best one that keeps the paraphrase set at least where reciprocal rank fusion has
it is named and reported on the test half and the paraphrase set. `--save-rankings` and
`--load-rankings` keep the services' rankings, to report again without searching.

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
from edrs_knowledge.keyword import terms
from edrs_knowledge.search import COVERAGE_PASSAGES, convex_fusion, keyword_weight, query_coverage
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from retrieval_metrics import ndcg_at, recall_at

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".edrs" / "bench-cache"
SET_FILE = REPO / "benchmarks" / "data" / "pydoc_eval.json"
PARAPHRASE_FILE = REPO / "benchmarks" / "data" / "pydoc_paraphrase.json"
# The evaluation set's queries are split in two halves with this seed (per kind: each kind's
# queries shuffled, the first half of them tuning, the rest test). Fusion parameters are chosen
# on the tuning half only; the test half and the paraphrase set are reported, never tuned on.
SPLIT_SEED = 2026
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
                for p in reply.passages[:20]:
                    # What the keyword index holds of a passage: title, headings, text.
                    TEXTS[p.chunk_id] = "\n".join([p.title, *p.citation.heading_path, p.text])
    return rankings


# Passage id → its title, headings and text, for the passages searches returned near the top.
TEXTS: dict[str, str] = {}


def split(queries: list[pydoc_eval.Query]) -> tuple[list[int], list[int]]:
    """Indices of the tuning half and of the test half: each kind's queries shuffled with
    SPLIT_SEED, the first ceil(n/2) of each kind to tuning."""
    tune: list[int] = []
    rng = random.Random(SPLIT_SEED)
    for kind in sorted({q.kind for q in queries}):
        members = [i for i, q in enumerate(queries) if q.kind == kind]
        rng.shuffle(members)
        tune += members[: (len(members) + 1) // 2]
    chosen = set(tune)
    return sorted(tune), [i for i in range(len(queries)) if i not in chosen]


def coverages(queries: list[pydoc_eval.Query], keyword: list[list[Hit]]) -> list[float]:
    """For each query, the largest share of its terms that one of its first COVERAGE_PASSAGES
    keyword passages holds: what the service's adaptive fusion weighs keyword search by (the
    same functions, `edrs_knowledge.search.query_coverage` over `keyword.terms`)."""
    return [
        query_coverage(
            terms(q.text), [terms(TEXTS[c]) for c, _, _ in hits[:COVERAGE_PASSAGES] if c in TEXTS]
        )
        for q, hits in zip(queries, keyword, strict=True)
    ]


def fuse(
    keyword: list[Hit],
    vector: list[Hit],
    how: str,
    matched: float,
    unmatched: float,
    k: int,
    coverage: float,
) -> list[Hit]:
    """One fusion of a query's keyword and vector hits. `how` is `rrf` (`matched` on keyword's
    1/(k + rank), 1 - matched on vector's) or `convex:<keyword norm>:<vector norm>`: the
    service's `convex_fusion` with the keyword weight `keyword_weight(coverage, matched,
    unmatched)` (static when the two are equal)."""
    section = {c: e for c, e, _ in keyword + vector}
    if how == "rrf":
        scores: dict[str, float] = {}
        for hits, w in ((keyword, matched), (vector, 1 - matched)):
            for rank, (chunk, _, _) in enumerate(hits, start=1):
                scores[chunk] = scores.get(chunk, 0.0) + w / (k + rank)
        ranked = sorted(scores.items(), key=lambda s: (-s[1], s[0]))
    else:
        _, kw_norm, vec_norm = how.split(":")
        ranked, _ = convex_fusion(
            [(c, score) for c, _, score in keyword],
            [(c, score) for c, _, score in vector],
            [],
            keyword_weight=keyword_weight(coverage, matched, unmatched),
            graph_weight=0.0,
            keyword_norm=kw_norm,
            vector_norm=vec_norm,
        )
    return [(c, section[c], score) for c, score in ranked[:100]]


# The knowledge service's hybrid fusion with its default settings, in FUSION_GRID's names.
SERVICE_FUSION = "adaptive:max:minmax 0.90/0.00"
# The fusions tried on the tuning half: (name, how, keyword weight when a passage holds every
# term of the query, keyword weight when none holds any, k).
FUSION_GRID: list[tuple[str, str, float, float, int]] = [
    *[
        (f"rrf k={k} w={w:.2f}", "rrf", w, w, k)
        for k in (10, 30, 60)
        for w in (0.5, 0.6, 0.7, 0.8, 0.9)
    ],
    *[
        (f"{how} w={w:.2f}", how, w, w, 0)
        for how in ("convex:max:minmax", "convex:minmax:minmax")
        for w in [i / 20 for i in range(1, 20)]
    ],
    *[
        (f"adaptive:{how[7:]} {hi:.2f}/{lo:.2f}", how, hi, lo, 0)
        for how in ("convex:max:minmax", "convex:minmax:minmax")
        for hi in [i / 20 for i in range(10, 20)]
        for lo in [i / 10 for i in range(0, 6)]
    ],
]


def offline_fusions(
    queries: list[pydoc_eval.Query],
    rankings: Rankings,
    grid: list[tuple[str, str, float, float, int]],
) -> Rankings:
    """Fusions of the keyword and vector rankings the service returned (100 candidates each),
    computed here and not by the service: what each fusion of `grid` gives on the same
    candidates."""
    fused: Rankings = {name: [] for name, *_ in grid}
    covered = coverages(queries, rankings["keyword"])
    for keyword, vector, coverage in zip(
        rankings["keyword"], rankings["vector"], covered, strict=True
    ):
        for name, how, matched, unmatched, k in grid:
            fused[name].append(fuse(keyword, vector, how, matched, unmatched, k, coverage))
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
    title: str,
    queries: list[pydoc_eval.Query],
    results: dict[str, dict[str, list[float]]],
    members: list[int],
    by_kind: bool = True,
) -> None:
    """Mean nDCG@10 and recall@100 of each mode over `members` (and each kind among them), with
    each fused mode's ratio to keyword and vector and its per-query wins and losses."""
    groups = {"all": members}
    if by_kind:
        for kind in sorted({queries[i].kind for i in members}):
            groups[kind] = [i for i in members if queries[i].kind == kind]
        if len(groups) == 2:
            del groups[next(iter(set(groups) - {"all"}))]
    for group, chosen in groups.items():
        print(f"{title}, {group} queries ({len(chosen)}):")
        print(f"  {'mode':<30} {'nDCG@10':>8} {'recall@100':>11}")
        means: dict[str, dict[str, float]] = {}
        for mode in results:
            means[mode] = {
                metric: statistics.fmean(values[i] for i in chosen)
                for metric, values in results[mode].items()
            }
            print(f"  {mode:<30} {means[mode]['ndcg']:8.3f} {means[mode]['recall']:11.3f}")
        for fused in [m for m in results if m not in ("keyword", "vector")]:
            for other in ("keyword", "vector"):
                if other not in results:
                    continue
                ratios = "  ".join(
                    f"{label} {means[fused][metric] / means[other][metric]:.2f}"
                    if means[other][metric]
                    else f"{label} n/a"
                    for metric, label in (("ndcg", "nDCG@10"), ("recall", "recall@100"))
                )
                hybrid, base = results[fused]["ndcg"], results[other]["ndcg"]
                wins = sum(hybrid[i] > base[i] for i in chosen)
                losses = sum(hybrid[i] < base[i] for i in chosen)
                print(
                    f"  {fused + ' / ' + other:<40} {ratios}   nDCG@10 per query: better on "
                    f"{wins}, worse on {losses}, equal on {len(chosen) - wins - losses}"
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
    parser.add_argument(
        "--save-rankings", type=Path, help="write every ranking the services returned (JSON)"
    )
    parser.add_argument(
        "--load-rankings",
        type=Path,
        help="report from rankings saved by --save-rankings instead of running the services",
    )
    args = parser.parse_args()

    corpus, queries = eval_set(args.budget, args.concept, args.api)
    paraphrases = pydoc_eval.load_paraphrases(PARAPHRASE_FILE, corpus)
    built = set_as_json(args.budget, corpus, queries)
    pages = len(built["pages"])  # type: ignore[arg-type]
    chars = sum(s.text_length for s in corpus)
    print(
        f"corpus: {len(corpus):,} sections of {pages} library pages of {pydoc_eval.PACKAGE} "
        f"({chars:,} characters of text); {len(queries)} queries "
        + ", ".join(f"{sum(q.kind == k for q in queries)} {k}" for k in ("concept", "api"))
        + f"; relevant sections per query {min(len(q.relevant) for q in queries)} to "
        + f"{max(len(q.relevant) for q in queries)}; every content word of the query in a "
        + f"relevant section: {pydoc_eval.lexical_share(queries, corpus):.0%} of the queries "
        + f"(mean share of a query's words in it {pydoc_eval.word_overlap(queries, corpus):.0%})"
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
    tuning, test = split(queries)
    print(
        f"split (seed {SPLIT_SEED}, per kind): tuning half {len(tuning)} queries ("
        + ", ".join(f"{sum(queries[i].kind == k for i in tuning)} {k}" for k in ("concept", "api"))
        + f"), test half {len(test)} ("
        + ", ".join(f"{sum(queries[i].kind == k for i in test)} {k}" for k in ("concept", "api"))
        + "); fusions are chosen on the tuning half only"
    )
    print(
        f"paraphrase set: {len(paraphrases)} hand-written questions "
        f"({PARAPHRASE_FILE.relative_to(REPO)}); every content word in the relevant section: "
        f"{pydoc_eval.lexical_share(paraphrases, corpus):.0%} of them, mean share of a "
        f"question's words in it {pydoc_eval.word_overlap(paraphrases, corpus):.0%}"
    )
    everything = queries + paraphrases
    if args.load_rankings:
        saved = json.loads(args.load_rankings.read_text())
        rankings: Rankings = saved["rankings"]
        TEXTS.update(saved["texts"])
    else:
        rankings = search_services(corpus, everything)
    if args.save_rankings:
        args.save_rankings.write_text(json.dumps({"rankings": rankings, "texts": TEXTS}))
    at = len(queries)
    evaluated = evaluate(everything, rankings)
    report("test half", everything, evaluated, test)
    report("tuning half", everything, evaluated, tuning, by_kind=False)
    report("paraphrase set", everything, evaluated, list(range(at, len(everything))))

    paraphrase = list(range(at, len(everything)))
    grid = offline_fusions(everything, rankings, FUSION_GRID)
    fused = evaluate(everything, grid)
    guard = statistics.fmean(fused["rrf k=60 w=0.50"]["ndcg"][i] for i in paraphrase)
    scored = sorted(
        (
            (
                statistics.fmean(fused[name]["ndcg"][i] for i in tuning),
                statistics.fmean(fused[name]["ndcg"][i] for i in paraphrase),
                name,
            )
            for name in fused
        ),
        key=lambda s: (-s[0], s[2]),
    )
    covered = coverages(everything, rankings["keyword"])
    print(
        "offline fusions of the keyword and vector rankings above (computed here with the "
        f"service's functions, not by the service), {len(FUSION_GRID)} tried; the query's "
        f"coverage (COVERAGE_PASSAGES={COVERAGE_PASSAGES}): mean "
        + ", ".join(
            f"{label} {statistics.fmean(covered[i] for i in members):.2f} (all terms in one "
            f"passage: {sum(covered[i] == 1.0 for i in members) / len(members):.0%})"
            for label, members in (
                ("tuning", tuning),
                ("test", test),
                ("paraphrase", paraphrase),
            )
        )
    )
    print(
        "  chosen: the best nDCG@10 on the tuning half among the fusions that keep the "
        f"paraphrase set at least where reciprocal rank fusion (k=60, equal weights) has it "
        f"({guard:.3f}); the test half plays no part. Best on the tuning half:"
    )
    for value, para, name in scored[:12]:
        kept = "kept" if para >= guard else "fails the paraphrase guard"
        print(f"  {name:<34} tuning {value:.3f}  paraphrase {para:.3f}  {kept}")
    chosen = next(name for _, para, name in scored if para >= guard)
    print(f"  chosen: {chosen} (the service's default is {SERVICE_FUSION})")
    picked = {m: rankings[m] for m in ("keyword", "vector")} | {
        name: grid[name] for name in dict.fromkeys(["rrf k=60 w=0.50", chosen, SERVICE_FUSION])
    }
    off = evaluate(everything, picked)
    report("offline, test half", everything, off, test)
    report("offline, paraphrase set", everything, off, paraphrase)


def search_services(corpus: list[pydoc_eval.Section], queries: list[pydoc_eval.Query]) -> Rankings:
    """Ingests the corpus into a knowledge service (on a reasoning service, embedded PostgreSQL
    and NATS) and runs every query in each mode, then hybrid again without graph expansion."""
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
            # The benchmark's searches are not questions to learn from.
            "SEARCH_LOG_RETENTION_DAYS": "0",
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
    return rankings


if __name__ == "__main__":
    main()
