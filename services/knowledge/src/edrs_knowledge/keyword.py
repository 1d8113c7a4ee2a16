"""The keyword index: BM25 over passages with tantivy (decision 0010), scoped to a tenant and its
collections inside each query. Derived data: PostgreSQL's chunk rows are the truth, and the index
is rebuilt from them when it is missing or disagrees with them."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import tantivy

# Words of the query, everything else dropped: tantivy's query language gives ":", quotes,
# brackets and AND/OR/NOT meanings a user typing a question does not intend.
_WORD = re.compile(r"\w+")
_OPERATORS = {"AND", "OR", "NOT", "IN", "TO"}
# The writer's memory budget; tantivy needs at least 15 MB per indexing thread.
_WRITER_HEAP = 50_000_000


@dataclass(frozen=True)
class KeywordEntry:
    chunk_id: UUID
    tenant: str
    collection_id: UUID
    document_id: UUID
    title: str
    heading_path: Sequence[str]
    text: str


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: UUID
    score: float


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    # Raw (untokenised) fields: exact terms to filter and delete by.
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("tenant", stored=False, tokenizer_name="raw")
    builder.add_text_field("collection", stored=False, tokenizer_name="raw")
    builder.add_text_field("document_id", stored=False, tokenizer_name="raw")
    # Ranked fields: English stemming, as measured in decision 0010.
    builder.add_text_field("title", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    return builder.build()


# Words that say nothing about a query's subject, left out of its terms when hybrid search asks
# how much of the query a passage holds (`terms`): Lucene's English stop words, and the words
# of a question ("how do I ...").
STOPWORDS = sorted(
    {
        *("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into"),
        *("is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then"),
        *("there", "these", "they", "this", "to", "was", "will", "with"),
        *("how", "what", "why", "when", "where", "which", "who", "whom", "whose"),
        *("do", "does", "did", "can", "could", "should", "would", "may", "might", "must"),
        *("i", "me", "my", "we", "our", "you", "your", "am", "has", "have", "had", "so"),
    }
)
# The ranked fields' analyser (tantivy's `en_stem`: simple tokens, over-long ones dropped,
# lower case, English stemming), with the stop words above removed.
_TERMS = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(40))
    .filter(tantivy.Filter.lowercase())
    .filter(tantivy.Filter.custom_stopword(STOPWORDS))
    .filter(tantivy.Filter.stemmer("english"))
    .build()
)


def terms(text: str) -> set[str]:
    """The index terms of `text` (as the keyword index reads it), stop words left out."""
    return set(_TERMS.analyze(text))


def query_words(query: str) -> str:
    """The query as plain words for tantivy's parser (an OR of them, ranked by BM25)."""
    return " ".join(w.lower() if w in _OPERATORS else w for w in _WORD.findall(query))


class KeywordIndex:
    """One tantivy index in a folder, written by one process (this service's ingestion)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.schema = _schema()
        folder.mkdir(parents=True, exist_ok=True)
        self.index = tantivy.Index(self.schema, path=str(folder), reuse=True)
        self._writer = self.index.writer(heap_size=_WRITER_HEAP, num_threads=1)
        # One writer, one thread at a time: tantivy's writer is not shared across threads.
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, folder: Path) -> KeywordIndex:
        """Open the index in `folder`, or create it; an index of another schema (an older
        version of this module) is replaced by an empty one, to be rebuilt."""
        try:
            return cls(folder)
        except ValueError:
            shutil.rmtree(folder, ignore_errors=True)
            return cls(folder)

    def count(self) -> int:
        self.index.reload()
        return int(self.index.searcher().num_docs)

    def _scope(
        self,
        tenant: str,
        collections: Sequence[UUID],
        document_ids: Sequence[UUID] | None,
    ) -> tantivy.Query:
        clauses = [
            (tantivy.Occur.Must, tantivy.Query.term_query(self.schema, "tenant", tenant)),
            (
                tantivy.Occur.Must,
                tantivy.Query.term_set_query(
                    self.schema, "collection", [str(c) for c in collections]
                ),
            ),
        ]
        if document_ids is not None:
            clauses.append(
                (
                    tantivy.Occur.Must,
                    tantivy.Query.term_set_query(
                        self.schema, "document_id", [str(d) for d in document_ids]
                    ),
                )
            )
        # The scope filters and does not score: only the words rank (BM25).
        return tantivy.Query.const_score_query(tantivy.Query.boolean_query(clauses), 0.0)

    def _search(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        document_ids: Sequence[UUID] | None,
    ) -> list[KeywordHit]:
        words = query_words(query)
        if not words or not collections or (document_ids is not None and not document_ids):
            return []
        text_query, _ = self.index.parse_query_lenient(words, ["title", "text"])
        full = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, text_query),
                (tantivy.Occur.Must, self._scope(tenant, collections, document_ids)),
            ]
        )
        searcher = self.index.searcher()
        hits = searcher.search(full, k, count=False).hits
        return [
            KeywordHit(UUID(searcher.doc(address)["chunk_id"][0]), float(score))
            for score, address in hits
        ]

    async def search(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        document_ids: Sequence[UUID] | None = None,
    ) -> list[KeywordHit]:
        """The `k` passages of `tenant` in `collections` (and `document_ids`) that best match the
        words of `query`, best first, ties by chunk id."""
        hits = await asyncio.to_thread(self._search, tenant, collections, query, k, document_ids)
        hits.sort(key=lambda h: (-h.score, str(h.chunk_id)))
        return hits

    def _count_term(self, field: str, value: str) -> int:
        query = tantivy.Query.term_query(self.schema, field, value)
        found = self.index.searcher().search(query, 1, count=True)
        return int(getattr(found, "count", 0) or 0)

    def _replace(self, document_ids: Iterable[UUID], entries: Sequence[KeywordEntry]) -> int:
        self.index.reload()
        removed = 0
        for document_id in document_ids:
            removed += self._count_term("document_id", str(document_id))
            self._writer.delete_documents_by_term("document_id", str(document_id))
        for e in entries:
            self._writer.add_document(
                tantivy.Document(
                    chunk_id=str(e.chunk_id),
                    tenant=e.tenant,
                    collection=str(e.collection_id),
                    document_id=str(e.document_id),
                    title=e.title,
                    text="\n".join([*e.heading_path, e.text]),
                )
            )
        self._writer.commit()
        self.index.reload()
        return removed

    async def replace_documents(
        self, document_ids: Iterable[UUID], entries: Sequence[KeywordEntry] = ()
    ) -> int:
        """Remove these documents' passages and add `entries`, in one commit; returns how many
        passages were removed."""
        async with self._lock:
            return await asyncio.to_thread(self._replace, list(document_ids), entries)

    def _delete_collection(self, collection_id: UUID) -> int:
        self.index.reload()
        removed = self._count_term("collection", str(collection_id))
        self._writer.delete_documents_by_term("collection", str(collection_id))
        self._writer.commit()
        self.index.reload()
        return removed

    async def delete_collection(self, collection_id: UUID) -> int:
        async with self._lock:
            return await asyncio.to_thread(self._delete_collection, collection_id)

    def _rebuild(self, entries: Sequence[KeywordEntry]) -> None:
        self._writer.delete_all_documents()
        self._replace([], entries)

    async def rebuild(self, entries: Sequence[KeywordEntry]) -> None:
        """Replace the whole index with `entries`."""
        async with self._lock:
            await asyncio.to_thread(self._rebuild, entries)

    async def count_document(self, document_id: UUID) -> int:
        self.index.reload()
        return await asyncio.to_thread(self._count_term, "document_id", str(document_id))

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._writer.wait_merging_threads)
