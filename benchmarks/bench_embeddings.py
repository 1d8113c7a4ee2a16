"""Embedding backends side by side: the reasoning service's encoders (sentence-transformers on
torch, ONNX Runtime float32, ONNX Runtime int8, and mixed: ONNX for small calls, torch for large
ones) on all-MiniLM-L6-v2, in one process.

Speed: passages of about 180 words (this repository's docs, cut by words) in batches of 32 →
passages/s, and single short queries → latency p50/p95/p99. The backends take turns (the order
rotates every round, and every query goes to each backend in turn), after a warm-up, so a busy
host slows them alike; passages/s is the median of the rounds, and each is also given as a ratio
to torch. Peak memory: each backend loaded alone in a child process (its peak RSS after loading
and encoding the passages). Load time: the first load exports the ONNX files into the service's
cache (EDRS_REASONING_EMBEDDING_CACHE_DIR or ~/.cache/edrs/reasoning); the run reports both.

Quality: retrieval on the pydoc evaluation set (data/pydoc_eval.json: 343 sections of the Python
3.11 docs, 300 index-entry queries, and the 68 hand-written paraphrase questions), brute-force
cosine top 10 per backend: recall@10 against the relevance judgements, and overlap@10 with torch's
top 10 (the share of torch's ten the backend also returns). The docs package is downloaded once
(`apt-get download python3.11-doc`) into .edrs/bench-cache/, as bench_knowledge_quality does.

Run `python benchmarks/bench_embeddings.py [--threads 1] [--rounds 5] [--queries 40]`; it prints
figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydoc_eval
from edrs_reasoning import model_files, onnx_embeddings
from edrs_reasoning.embeddings import MixedEncoder, TextEncoder, load_torch_encoder
from retrieval_metrics import recall_at

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".edrs" / "bench-cache"
SET_FILE = REPO / "benchmarks" / "data" / "pydoc_eval.json"
PARAPHRASE_FILE = REPO / "benchmarks" / "data" / "pydoc_paraphrase.json"
BACKENDS = ("torch", "onnx", "onnx-int8", "mixed")
BATCH = 32
PASSAGE_WORDS = 180


def load_encoder(backend: str, threads: int) -> tuple[TextEncoder, float]:
    """The encoder and its load time in seconds."""
    path = model_files.embedding_model_path(None)
    started = time.perf_counter()
    encoder: TextEncoder
    if backend == "torch":
        encoder = load_torch_encoder(path, "cpu", "float32", threads)
    else:
        onnx = onnx_embeddings.load(
            path,
            model_files.embedding_cache_dir(None),
            quantised=backend == "onnx-int8",
            threads=threads,
        )
        encoder = onnx
        if backend == "mixed":
            encoder = MixedEncoder(onnx, load_torch_encoder(path, "cpu", "float32", threads))
    return encoder, time.perf_counter() - started


def passages(count: int) -> list[str]:
    words: list[str] = []
    for doc in sorted((REPO / "docs").rglob("*.md")):
        words += doc.read_text().split()
    return [
        " ".join(words[i * PASSAGE_WORDS : (i + 1) * PASSAGE_WORDS])
        for i in range(min(count, len(words) // PASSAGE_WORDS))
    ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


Figures = dict[str, list[float]]


def speed(
    encoders: dict[str, TextEncoder], texts: list[str], queries: list[str], rounds: int
) -> tuple[Figures, Figures, dict[str, tuple[float, float]]]:
    names = list(encoders)
    for name in names:  # warm-up: first-call allocations, thread pools, caches
        encoders[name].encode(texts[:BATCH], BATCH)
        for q in queries[:5]:
            encoders[name].encode([q], BATCH)
    throughput: dict[str, list[float]] = {n: [] for n in names}
    latency: dict[str, list[float]] = {n: [] for n in names}
    # CPU ms per passage and per query (process CPU time over the calls): the figure that others
    # taking the cores barely moves, where wall-clock rates swing with the host's load.
    cpu_passage: dict[str, list[float]] = {n: [] for n in names}
    cpu_query: dict[str, float] = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            started, cpu = time.perf_counter(), time.process_time()
            encoders[name].encode(texts, BATCH)
            throughput[name].append(len(texts) / (time.perf_counter() - started))
            cpu_passage[name].append((time.process_time() - cpu) * 1e3 / len(texts))
        for i, q in enumerate(queries):
            turn = names[(r + i) % len(names) :] + names[: (r + i) % len(names)]
            for name in turn:
                started, cpu = time.perf_counter(), time.process_time()
                encoders[name].encode([q], BATCH)
                latency[name].append((time.perf_counter() - started) * 1e3)
                cpu_query[name] += time.process_time() - cpu
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {throughput[n][-1]:.1f}/s" for n in names),
            flush=True,
        )
    costs = {
        n: (statistics.median(cpu_passage[n]), cpu_query[n] * 1e3 / len(latency[n])) for n in names
    }
    return throughput, latency, costs


def peak_memory(backend: str, threads: int, count: int) -> float:
    """MiB: peak RSS of a child process that loads `backend` and encodes the passages."""
    out = subprocess.run(
        [
            *(sys.executable, __file__, "--memory-of", backend),
            *("--threads", str(threads), "--passages", str(count)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def child_memory(backend: str, threads: int, count: int) -> None:
    encoder, _ = load_encoder(backend, threads)
    encoder.encode(passages(count), BATCH)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child would
    # report this (large) parent's peak.
    status = Path("/proc/self/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
    print(int(line.split()[1]) / 1024)


def quality(encoders: dict[str, TextEncoder]) -> None:
    shipped = json.loads(SET_FILE.read_text())
    root = pydoc_eval.fetch_docs(CACHE)
    corpus, _ = pydoc_eval.load_corpus(root, shipped["budget_chars"])
    keys = [s.key for s in corpus]
    if sorted(keys) != sorted(set(keys)) or len(corpus) != shipped["sections"]:
        raise SystemExit(f"the docs package gives {len(corpus)} sections, the set has 343")
    documents = [" / ".join([s.page_title, *s.heading_path]) + ": " + s.text for s in corpus]
    queries = [(q["query"], set(q["relevant"])) for q in shipped["queries"]]
    queries += [
        (q["query"], set(q["relevant"])) for q in json.loads(PARAPHRASE_FILE.read_text())["queries"]
    ]
    rankings: dict[str, list[list[int]]] = {}
    for name, encoder in encoders.items():
        started = time.perf_counter()
        docs = encoder.encode(documents, BATCH)
        asked = encoder.encode([q for q, _ in queries], BATCH)
        rankings[name] = [list(np.argsort(-(docs @ v))[:10]) for v in asked]
        print(f"  {name}: corpus and queries embedded in {time.perf_counter() - started:.0f} s")
    print(
        f"\nRetrieval, {len(corpus)} pydoc sections, {len(queries)} queries "
        f"({len(shipped['queries'])} index entries + {len(queries) - len(shipped['queries'])} "
        "paraphrases), brute-force cosine top 10:"
    )
    print(f"  {'backend':<10} {'recall@10':>9} {'overlap@10 with torch':>22} {'same top 1':>10}")
    for name, ranked in rankings.items():
        recall = statistics.mean(
            recall_at([keys[i] for i in r], rel, 10)
            for r, (_, rel) in zip(ranked, queries, strict=True)
        )
        overlap = statistics.mean(
            len(set(r) & set(t)) / 10 for r, t in zip(ranked, rankings["torch"], strict=True)
        )
        top1 = statistics.mean(
            float(r[0] == t[0]) for r, t in zip(ranked, rankings["torch"], strict=True)
        )
        print(f"  {name:<10} {recall:>9.3f} {overlap:>22.3f} {top1:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the default 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--queries", type=int, default=40, help="single queries per round")
    parser.add_argument("--no-quality", action="store_true", help="skip the retrieval check")
    parser.add_argument("--memory-of", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        child_memory(args.memory_of, args.threads, args.passages)
        return

    encoders: dict[str, TextEncoder] = {}
    loads: dict[str, float] = {}
    for name in BACKENDS:
        encoders[name], loads[name] = load_encoder(name, args.threads)
    reloads = {name: load_encoder(name, args.threads)[1] for name in ("onnx", "onnx-int8")}
    texts = passages(args.passages)
    questions = [q["query"] for q in json.loads(PARAPHRASE_FILE.read_text())["queries"]]
    queries = (questions * (1 + args.queries // len(questions)))[: args.queries]
    words = statistics.mean(len(t.split()) for t in texts)
    print(
        f"all-MiniLM-L6-v2, {args.threads} thread(s), {len(texts)} passages of {words:.0f} words "
        f"in batches of {BATCH}, {len(queries)} single queries a round, {args.rounds} rounds"
    )
    throughput, latency, cpu = speed(encoders, texts, queries, args.rounds)
    memory = {name: peak_memory(name, args.threads, args.passages) for name in BACKENDS}
    base = statistics.median(throughput["torch"])
    base_p50 = percentile(latency["torch"], 50)
    print(
        f"\n  {'backend':<10} {'passages/s':>10} {'vs torch':>8} {'query p50':>10} {'p95':>7} "
        f"{'p99':>7} {'p50 gain':>10} {'peak RSS':>9} {'load':>12}"
    )
    for name in BACKENDS:
        rate = statistics.median(throughput[name])
        p50 = percentile(latency[name], 50)
        load = f"{loads[name]:.1f} s" + (f" / {reloads[name]:.1f}" if name in reloads else "")
        print(
            f"  {name:<10} {rate:>10.1f} {rate / base:>8.2f} {p50:>8.1f}ms "
            f"{percentile(latency[name], 95):>5.1f}ms {percentile(latency[name], 99):>5.1f}ms "
            f"{base_p50 / p50:>10.2f} {memory[name]:>6.0f}MiB {load:>12}"
        )
    print("  (load: first load, then a second one reading the exported file from the cache)")
    print(f"\n  {'backend':<10} {'CPU ms/passage':>14} {'vs torch':>8} {'CPU ms/query':>12}")
    for name in BACKENDS:
        per_passage, per_query = cpu[name]
        print(
            f"  {name:<10} {per_passage:>14.1f} {cpu['torch'][0] / per_passage:>8.2f} "
            f"{per_query:>12.1f}"
        )
    print("  (vs torch: torch's CPU time over the backend's, above 1 is cheaper)")
    if not args.no_quality:
        quality(encoders)


if __name__ == "__main__":
    main()
