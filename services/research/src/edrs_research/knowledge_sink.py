"""Fetched pages into the tenant's "research" collection of the knowledge service, so that they
are chunked, embedded and indexed like any document and citations use the knowledge service's
passages and offsets.

    sink = KnowledgeSink(rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub))
    document_id = await sink.ingest_page(page)                 # the caller's tenant (context)
    document_id = await sink.ingest_page(page, client_id=cid)  # outside a request (a job)

One document per page, keyed by its normalised URL (the document's external_id; a URL longer
than the knowledge service's 500 characters is keyed "url-sha256:<hex of the URL>"), so fetching
a page again updates the same document: a new version when its text changed, nothing when it
did not. The text ingested is the page's extracted main text, as plain text, so the stored text is
the text the fetcher read. Metadata: url, final_url, domain, fetched_at, content_hash, and
language, author and published when known.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator

from edrs_core import AlreadyExists, NotFound
from edrs_core.context import request_context
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_research.web.fetch import Page

COLLECTION = "research"
COLLECTION_DESCRIPTION = "Web pages read by research (one document per URL)"
MAX_EXTERNAL_ID = 500
MAX_SOURCE = 2_000
MAX_MESSAGE_TEXT = 3 * 1024 * 1024
"""Larger texts (UTF-8 bytes) are streamed with UploadDocument: a gRPC message holds 4 MiB."""
UPLOAD_PIECE = 1024 * 1024


def external_id(url: str) -> str:
    """The document key of a page's normalised URL."""
    if len(url) <= MAX_EXTERNAL_ID:
        return url
    return "url-sha256:" + hashlib.sha256(url.encode()).hexdigest()


def page_metadata(page: Page) -> dict[str, str]:
    metadata = {
        "url": page.url,
        "final_url": page.final_url[:MAX_SOURCE],
        "domain": page.domain,
        "fetched_at": page.fetched_at.isoformat(),
        "content_hash": page.content_hash,
    }
    if page.language:
        metadata["language"] = page.language
    if page.author:
        metadata["author"] = page.author[:2_000]
    if page.published is not None:
        metadata["published"] = page.published.date().isoformat()
    if page.truncated:
        metadata["truncated"] = "true"
    return metadata


@contextlib.contextmanager
def _tenant(client_id: str | None) -> Iterator[None]:
    if client_id is None:
        yield
    else:
        with request_context(client_id, None):
            yield


class KnowledgeSink:
    """Ingests pages into a tenant's research collection (created on first use)."""

    def __init__(
        self,
        knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub,
        *,
        max_message_text: int = MAX_MESSAGE_TEXT,
    ) -> None:
        self.knowledge = knowledge
        self.max_message_text = max_message_text

    async def ensure_collection(self, *, client_id: str | None = None) -> None:
        with _tenant(client_id), contextlib.suppress(AlreadyExists):
            await self.knowledge.CreateCollection(
                knowledge_pb2.CreateCollectionRequest(
                    name=COLLECTION, description=COLLECTION_DESCRIPTION
                )
            )

    async def ingest_page(self, page: Page, *, client_id: str | None = None) -> str:
        """The id of the knowledge document holding `page`'s text (created or updated)."""
        request = knowledge_pb2.IngestDocumentRequest(
            collection=COLLECTION,
            external_id=external_id(page.url),
            title=page.title[:500],
            content_type="text/plain",
            source=page.final_url[:MAX_SOURCE],
            metadata=page_metadata(page),
        )
        data = page.text.encode("utf-8")
        with _tenant(client_id):
            try:
                response = await self._send(request, page.text, data)
            except NotFound:
                # The tenant has no research collection yet (or it was deleted): make it.
                await self.ensure_collection()
                response = await self._send(request, page.text, data)
        return str(response.document.id)

    async def _send(
        self, request: knowledge_pb2.IngestDocumentRequest, text: str, data: bytes
    ) -> knowledge_pb2.IngestDocumentResponse:
        if len(data) <= self.max_message_text:
            whole = knowledge_pb2.IngestDocumentRequest()
            whole.CopyFrom(request)
            whole.text = text
            return await self.knowledge.IngestDocument(whole)
        header = knowledge_pb2.IngestDocumentRequest()
        header.CopyFrom(request)
        header.filename = "page.txt"

        async def pieces() -> AsyncIterator[knowledge_pb2.UploadDocumentRequest]:
            yield knowledge_pb2.UploadDocumentRequest(document=header)
            for start in range(0, len(data), UPLOAD_PIECE):
                yield knowledge_pb2.UploadDocumentRequest(data=data[start : start + UPLOAD_PIECE])

        return await self.knowledge.UploadDocument(pieces())

    async def delete_document(self, document_id: str, *, client_id: str | None = None) -> None:
        """Deletes a page's document; one already gone is fine."""
        with _tenant(client_id), contextlib.suppress(NotFound):
            await self.knowledge.DeleteDocument(knowledge_pb2.DeleteDocumentRequest(id=document_id))
