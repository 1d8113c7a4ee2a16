"""The measurement behind decision 0010 (the keyword index): PostgreSQL full text, bm25s and
tantivy on the same passages, for quality and latency.

Corpus: Debian's python3-doc HTML (library, tutorial, reference, howto), through the knowledge
parser and chunker. Queries: the entries of its general index ("dumps() (in module json)"), each
relevant to the page it links to; a ranking of passages is judged by the pages it names, in order
(nDCG@10 and recall@100 with one relevant page). Latency: the same queries on the corpus copied
into enough collections of one tenant to pass 100k passages, each engine asked for the tenant's
top 10 in every collection with the tenant and collections inside its query.

Needs: `apt-get install python3-doc`, `pip install bm25s PyStemmer tantivy`. Not part of
`make bench` (its inputs are not the project's dependencies); run it by hand:
    .venv/bin/python benchmarks/keyword_index_measure.py
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_knowledge.chunking import Chunker
from edrs_knowledge.parsing import DocumentError, parse_document

DOCS = Path("/usr/share/doc/python3/html")
SECTIONS = ("library", "tutorial", "reference", "howto")
QUERIES = 300
TARGET_PASSAGES = 100_000
_ENTRY = re.compile(
    r'<li><a href="((?:library|tutorial|reference|howto)/[^"#]+)#[^"]*">([^<]+)</a>'
)


def corpus() -> list[tuple[str, str]]:
    """(page, passage text) for every passage of the docs."""
    chunker = Chunker()
    passages = []
    for section in SECTIONS:
        for path in sorted((DOCS / section).glob("*.html")):
            page = f"{section}/{path.name}"
            try:
                document = parse_document(path.read_bytes(), filename=path.name)
            except DocumentError:
                continue
            passages += [(page, c.embedding_text) for c in chunker.chunk(document)]
    return passages


def queries(pages: set[str]) -> list[tuple[str, str]]:
    """(query, relevant page) from the general index: entries that name their context."""
    found = []
    for path in sorted(DOCS.glob("genindex-*.html")):
        if path.name == "genindex-all.html":
            continue
        for page, text in _ENTRY.findall(path.read_text()):
            words = " ".join(re.findall(r"\w+", text))
            if "(" in text and page in pages and len(words.split()) >= 3:
                found.append((words, page))
    random.Random(7).shuffle(found)
    return found[:QUERIES]


def judge(ranked_pages: list[str], relevant: str) -> tuple[float, float]:
    seen: list[str] = []
    for page in ranked_pages:
        if page not in seen:
            seen.append(page)
    ndcg = next((1 / math.log2(i + 2) for i, p in enumerate(seen[:10]) if p == relevant), 0.0)
    return ndcg, float(relevant in seen)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def report(name: str, quality: list[tuple[float, float]], latency: list[float]) -> None:
    """Quality only for the one-copy runs: in the copied corpus every passage is there many
    times, so a top 10 names few pages and says nothing about ranking."""
    figures = f"p50 {percentile(latency, 50):7.2f} ms  p95 {percentile(latency, 95):7.2f} ms"
    if "one copy" in name:
        ndcg = statistics.mean(q[0] for q in quality)
        recall = statistics.mean(q[1] for q in quality)
        figures = f"nDCG@10 {ndcg:.3f}  recall@100 {recall:.3f}  top 100: {figures}"
    else:
        figures = f"{'':35}top 10:  {figures}"
    print(f"{name:38} {figures}")


# PostgreSQL full text


async def postgres(
    url: str, passages: list[tuple[str, str]], asked: list[tuple[str, str]], copies: int
) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute(
        """DROP TABLE IF EXISTS passages;
           CREATE TABLE passages (tenant text, collection text, page text, text text,
               search tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);"""
    )
    rows = [("acme", f"c{copy}", page, text) for copy in range(copies) for page, text in passages]
    await conn.copy_records_to_table(
        "passages", records=rows, columns=["tenant", "collection", "page", "text"]
    )
    await conn.execute(
        """CREATE INDEX ON passages USING gin (search);
           CREATE INDEX ON passages (tenant, collection); ANALYZE passages"""
    )
    collections = [f"c{copy}" for copy in range(copies)]
    # OR of the query's lexemes (the AND of websearch_to_tsquery finds nothing for most index
    # entries); ts_rank_cd has no IDF, ts_rank neither.
    sql = """WITH q AS (SELECT replace(plainto_tsquery('english', $1)::text, '&', '|')::tsquery AS q)
             SELECT page FROM passages, q
             WHERE tenant = 'acme' AND collection = ANY($2) AND search @@ q.q
             ORDER BY ts_rank_cd(search, q.q) DESC LIMIT $3"""
    for label, names in (("one copy", ["c0"]), (f"{len(rows):,} passages", collections)):
        quality, latency = [], []
        for query, relevant in asked:
            started = time.perf_counter()
            found = await conn.fetch(sql, query, names, 100 if label == "one copy" else 10)
            latency.append((time.perf_counter() - started) * 1000)
            quality.append(judge([r["page"] for r in found], relevant))
        report(f"postgres ts_rank_cd, {label}", quality, latency)
    await conn.close()


# bm25s


def bm25s_engine(
    passages: list[tuple[str, str]], asked: list[tuple[str, str]], copies: int
) -> None:
    import bm25s
    import numpy as np
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    for count in (1, copies):
        texts = [text for _ in range(count) for _, text in passages]
        pages = [page for _ in range(count) for page, _ in passages]
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
            show_progress=False,
        )
        # bm25s has no fields: a tenant's and collections' passages are a weight mask over the
        # whole index, applied to the scores before the top k is taken.
        mask = np.ones(len(texts), dtype=np.float32)
        quality, latency = [], []
        k = 100 if count == 1 else 10
        for query, relevant in asked:
            started = time.perf_counter()
            tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False)
            ids, _ = retriever.retrieve(tokens, k=k, weight_mask=mask, show_progress=False)
            latency.append((time.perf_counter() - started) * 1000)
            quality.append(judge([pages[i] for i in ids[0]], relevant))
        name = "one copy" if count == 1 else f"{len(texts):,} passages"
        report(f"bm25s, {name}", quality, latency)


# tantivy


def tantivy_engine(
    passages: list[tuple[str, str]], asked: list[tuple[str, str]], copies: int, folder: Path
) -> None:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("tenant", stored=False, tokenizer_name="raw")
    builder.add_text_field("collection", stored=False, tokenizer_name="raw")
    builder.add_text_field("page", stored=True, tokenizer_name="raw")
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    schema = builder.build()
    index = tantivy.Index(schema, path=str(folder))
    writer = index.writer(heap_size=200_000_000, num_threads=1)
    for copy in range(copies):
        for page, text in passages:
            writer.add_document(
                tantivy.Document(tenant="acme", collection=f"c{copy}", page=page, text=text)
            )
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    for label, names in (("one copy", ["c0"]), ("copies", [f"c{c}" for c in range(copies)])):
        scope = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "tenant", "acme")),
                (
                    tantivy.Occur.Must,
                    tantivy.Query.term_set_query(schema, "collection", names),
                ),
            ]
        )
        quality, latency = [], []
        k = 100 if label == "one copy" else 10
        for query, relevant in asked:
            started = time.perf_counter()
            text_query = index.parse_query(query, ["text"])
            full = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, text_query), (tantivy.Occur.Must, scope)]
            )
            # The scope is a filter: only the text clause scores (BM25).
            hits = searcher.search(full, k).hits
            pages = [searcher.doc(address)["page"][0] for _, address in hits]
            latency.append((time.perf_counter() - started) * 1000)
            quality.append(judge(pages, relevant))
        name = "one copy" if label == "one copy" else f"{searcher.num_docs:,} passages"
        report(f"tantivy, {name}", quality, latency)


def main() -> None:
    if not DOCS.is_dir():
        sys.exit(f"{DOCS} is missing: apt-get install python3-doc")
    started = time.perf_counter()
    passages = corpus()
    asked = queries({page for page, _ in passages})
    copies = math.ceil(TARGET_PASSAGES / len(passages))
    print(
        f"{len(passages):,} passages from {len({p for p, _ in passages})} pages in "
        f"{time.perf_counter() - started:.0f} s; {len(asked)} queries; {copies} copies for latency"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tantivy_engine(passages, asked, copies, Path(tmp))
    bm25s_engine(passages, asked, copies)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedPostgres(tmp, settings={"fsync": "off", "synchronous_commit": "off"}) as engine,
    ):
        asyncio.run(postgres(engine.url(), passages, asked, copies))


if __name__ == "__main__":
    main()
