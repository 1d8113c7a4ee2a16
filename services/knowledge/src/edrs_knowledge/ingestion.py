"""The ingestion pipeline, run in the service in the background: a few workers take QUEUED
document versions from the database, parse and chunk them, embed the passages that changed, and
write the vector index, the passages and the keyword index. A document that fails, fails alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from edrs_core.errors import ServiceError
from edrs_core.ids import new_id
from edrs_vectors import VectorIndex, VectorIndexError, VectorRecord

from edrs_knowledge.chunking import Chunk, Chunker
from edrs_knowledge.embeddings import BatchEmbedder
from edrs_knowledge.graph import Extraction, extract
from edrs_knowledge.graph_model import ModelExtractor
from edrs_knowledge.keyword import KeywordEntry, KeywordIndex
from edrs_knowledge.parsing import DocumentError, ParsedDocument, parse_document
from edrs_knowledge.sensitive import apply_policy
from edrs_knowledge.store import StoredChunk, Work
from edrs_knowledge.store.postgres import NewChunk, PostgresKnowledgeStore

log = logging.getLogger("edrs.knowledge.ingestion")

# How often an idle worker looks at the queue without being woken: a safety net for versions
# queued by another replica or left by a stopped one; a request in this process wakes it at once.
_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Plan:
    """A new version's passages, split into those to embed and those kept from before."""

    chunks: list[NewChunk]
    to_embed: list[tuple[NewChunk, str]]  # (passage, the text to embed)
    stale: list[UUID]  # the previous passages no longer in the document


def plan(chunks: Sequence[Chunk], existing: Sequence[StoredChunk]) -> Plan:
    """Reuse the id (and so the vector) of every previous passage with the same text and heading
    path, in order; everything else is new and gets embedded."""
    available: dict[tuple[str, tuple[str, ...]], list[UUID]] = {}
    for old in existing:
        available.setdefault((old.content_hash, old.heading_path), []).append(old.id)
    kept: set[UUID] = set()
    made: list[NewChunk] = []
    to_embed: list[tuple[NewChunk, str]] = []
    for c in chunks:
        ids = available.get((c.content_hash, c.heading_path))
        reused = ids.pop(0) if ids else None
        chunk = NewChunk(
            id=reused or new_id(),
            index=c.index,
            text=c.text,
            start=c.start,
            end=c.end,
            token_count=c.token_count,
            heading_path=c.heading_path,
            page=c.page,
            content_hash=c.content_hash,
        )
        made.append(chunk)
        if reused is None:
            to_embed.append((chunk, c.embedding_text))
        else:
            kept.add(reused)
    return Plan(made, to_embed, [old.id for old in existing if old.id not in kept])


@dataclass(frozen=True)
class _Parsed:
    """A version read and cut: the document as its DLP policy left it, the title it was given
    (redacted alike), what was redacted per kind, its passages and the rules' graph."""

    document: ParsedDocument
    given_title: str
    redactions: dict[str, int]
    chunks: list[Chunk]
    graph: Extraction | None


class Ingestion:
    def __init__(
        self,
        store: PostgresKnowledgeStore,
        embedder: BatchEmbedder,
        vectors: VectorIndex,
        keywords: KeywordIndex,
        chunker: Chunker,
        *,
        concurrency: int,
        max_bytes: int,
        extract_graph: bool = True,
        graph_model: ModelExtractor | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.vectors = vectors
        self.keywords = keywords
        self.chunker = chunker
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self.extract_graph = extract_graph
        # The chat model's reading of the passages, added to the rules' (None: rules only).
        self.graph_model = graph_model
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was queued: wake the idle workers."""
        self._wake.set()

    async def run(self) -> None:
        """The workers, for the life of the service."""
        requeued = await self.store.requeue_interrupted()
        if requeued:
            log.info("requeued %d document versions a stopped process left half done", requeued)
        workers = [
            asyncio.create_task(self._worker(), name=f"knowledge-ingest-{i}")
            for i in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def sync_keyword_index(self) -> None:
        """Rebuild the keyword index from the passages when it does not hold as many (missing, or
        left behind by a crash); run before the service reports ready (decision 0010)."""
        if self.keywords.count() == await self.store.chunk_total():
            return
        rows = await self.store.keyword_rows()
        await self.keywords.rebuild([_entry(r) for r in rows])
        log.info("rebuilt the keyword index from %d passages", len(rows))

    async def _worker(self) -> None:
        while True:
            # Cleared before looking, so a version queued while we look wakes us again.
            self._wake.clear()
            try:
                work = await self.store.claim()
            except Exception:
                log.exception("could not read the ingestion queue")
                work = None
            if work is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _POLL_SECONDS)
                continue
            try:
                await self.process(work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not the document's fault as far as we know: say so, keep the details in the log.
                log.exception("ingesting document %s failed", work.document_id)
                await self.store.fail(
                    work,
                    "indexing_failed",
                    f"the document could not be indexed ({type(exc).__name__})",
                )

    def _parse(self, work: Work) -> _Parsed:
        parsed = parse_document(
            work.data,
            filename=work.filename or None,
            content_type=work.content_type or None,
            max_bytes=self.max_bytes,
        )
        # The tenant's DLP policy, before anything is cut, embedded or indexed (raises
        # SensitiveDataBlocked for "block").
        parsed, given_title, redactions = apply_policy(parsed, work.dlp_policy, work.title)
        chunks = self.chunker.chunk(parsed)
        # The graph stage reads the passages as chunked (rules: no model, no I/O).
        graph = extract([(c.text, c.heading_path) for c in chunks]) if self.extract_graph else None
        return _Parsed(parsed, given_title, redactions, chunks, graph)

    async def process(self, work: Work) -> None:
        try:
            # PDFium, python-docx, the tokenizer and extraction hold the CPU: off the event loop.
            done = await asyncio.to_thread(self._parse, work)
        except DocumentError as exc:
            await self.store.fail(work, exc.code, str(exc))
            return
        parsed, chunks, graph = done.document, done.chunks, done.graph
        if done.redactions:
            log.info(
                "document %s version %d: DLP redacted %s",
                work.document_id,
                work.version,
                ", ".join(f"{n} {kind}" for kind, n in sorted(done.redactions.items())),
            )
        title = (
            done.given_title or parsed.title or work.filename or work.external_id or "Untitled"
        )[:500]
        await self.store.parsed(
            work,
            title=title,
            text=parsed.text,
            format=parsed.format.value,
            pages=parsed.pages or 0,
            chunk_count=len(chunks),
            redactions=done.redactions,
        )
        existing = await self.store.document_chunks(work.client_id, work.document_id)
        steps = plan(chunks, existing)
        # The model reads the passages (I/O to reasoning) while they are embedded; its reading
        # joins the rules' before the indexing write, and never fails the document.
        reading = (
            asyncio.create_task(
                self.graph_model.extend(
                    work.client_id,
                    work.document_id,
                    [(c.id, c.text) for c in steps.chunks],
                    graph,
                ),
                name=f"knowledge-graph-model-{work.document_id}",
            )
            if graph is not None and self.graph_model is not None and steps.chunks
            else None
        )
        try:
            await self._index(work, title, parsed, steps, graph, reading)
        finally:
            # The document failed (or this worker stops) before the reading was used. Not
            # awaited: that would swallow a cancellation of this worker arriving meanwhile.
            if reading is not None and not reading.done():
                reading.cancel()

    async def _index(
        self,
        work: Work,
        title: str,
        parsed: ParsedDocument,
        steps: Plan,
        graph: Extraction | None,
        reading: asyncio.Task[Extraction] | None,
    ) -> None:
        """Embed the new passages, write the vector and keyword indexes, then the passages and
        the graph (the model's `reading` when there is one) in the indexing transaction."""
        try:
            vectors = await self.embedder.embed([text for _, text in steps.to_embed])
        except ServiceError as exc:
            await self.store.fail(
                work, "embedding_failed", f"the passages could not be embedded: {exc}"
            )
            return
        new_ids = [c.id for c, _ in steps.to_embed]
        if steps.to_embed:
            try:
                result = await self.vectors.upsert(
                    [
                        VectorRecord(
                            c.id, v, work.client_id, str(work.collection_id), str(work.document_id)
                        )
                        for (c, _), v in zip(steps.to_embed, vectors, strict=True)
                    ]
                )
            except VectorIndexError as exc:
                await self.store.fail(
                    work, "indexing_failed", f"the vector index refused it: {exc}"
                )
                return
            if result.rejected:
                await self.vectors.delete(work.client_id, new_ids)
                first = result.rejected[0]
                await self.store.fail(
                    work,
                    "indexing_failed",
                    f"the vector index refused passage {first.index}: {first.reason}",
                )
                return
        # The keyword index is written before the version is marked INDEXED, so a document
        # reported searchable is searchable in every mode; passages not yet (or no longer) in
        # the database are skipped by search, which reads them from there.
        await self.keywords.replace_documents(
            [work.document_id],
            [
                KeywordEntry(
                    chunk_id=c.id,
                    tenant=work.client_id,
                    collection_id=work.collection_id,
                    document_id=work.document_id,
                    title=title,
                    heading_path=c.heading_path,
                    text=c.text,
                )
                for c in steps.chunks
            ],
        )
        if reading is not None:
            graph = await reading
        stored = await self.store.indexed(
            work,
            title=title,
            chunks=steps.chunks,
            stale=steps.stale,
            embedded=len(steps.to_embed),
            content_type=parsed.content_type,
            graph=graph,
        )
        if not stored:
            # Deleted while it was being ingested: take back what was written for it.
            await self.vectors.delete(work.client_id, new_ids)
            await self.keywords.replace_documents([work.document_id])
            return
        await self.vectors.delete(work.client_id, steps.stale)
        log.info(
            "document %s version %d indexed: %d passages, %d embedded, %d entities, %d relations",
            work.document_id,
            work.version,
            len(steps.chunks),
            len(steps.to_embed),
            len(graph.entities) if graph else 0,
            graph.relation_count if graph else 0,
        )

    async def forget_document(
        self, client_id: str, collection_id: UUID, document_id: UUID
    ) -> tuple[int, int]:
        """Remove a deleted document's vectors and keyword entries; returns how many of each."""
        vectors = await self.vectors.count(client_id, str(collection_id), str(document_id))
        await self.vectors.delete_documents(client_id, str(collection_id), [str(document_id)])
        keywords = await self.keywords.replace_documents([document_id])
        return vectors, keywords

    async def forget_collection(self, client_id: str, collection_id: UUID) -> int:
        vectors = await self.vectors.count(client_id, str(collection_id))
        await self.vectors.delete_collection(client_id, str(collection_id))
        await self.keywords.delete_collection(collection_id)
        return vectors


def _entry(r: Any) -> KeywordEntry:
    """A passage row of PostgresKnowledgeStore.keyword_rows, as the keyword index holds it."""
    return KeywordEntry(
        chunk_id=r["id"],
        tenant=r["client_id"],
        collection_id=r["collection_id"],
        document_id=r["document_id"],
        title=r["title"],
        heading_path=tuple(r["heading_path"]),
        text=r["text"],
    )
