"""A persona's knowledge collections: resolved and checked when they are attached, searched in
every turn.

A turn never fails for want of passages: when the knowledge service cannot answer (down, slow, a
collection deleted since it was attached), the turn answers without them and the failure is
logged (docs/conversation.md, "Knowledge and citations")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

from edrs_core import InvalidArgument, NotFound, ServiceError
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_persona.config import PersonaSettings
from edrs_persona.prompt import Source
from edrs_persona.store import Persona

log = logging.getLogger("edrs.persona.knowledge")

FIELD = "knowledge_collections"
# The knowledge service's longest query (SearchRequest.query); a longer message is searched by
# its beginning.
QUERY_MAX = 2000


def source_of(passage: knowledge_pb2.Passage) -> Source:
    c = passage.citation
    return Source(
        chunk_id=passage.chunk_id,
        document_id=passage.document_id,
        external_id=passage.external_id,
        collection_id=passage.collection_id,
        title=passage.title,
        text=passage.text,
        score=passage.score,
        page=c.page,
        heading_path=tuple(c.heading_path),
        start=c.start,
        end=c.end,
        content_hash=c.content_hash,
    )


class KnowledgeSources:
    def __init__(
        self, knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub, settings: PersonaSettings
    ) -> None:
        self.knowledge = knowledge
        self.settings = settings

    async def resolve(self, collections: Sequence[str]) -> list[UUID]:
        """The ids of `collections` (each an id or a name), which must exist in the caller's
        tenant: INVALID_ARGUMENT naming the one that does not. Other failures of the knowledge
        service keep their code (UNAVAILABLE when it is down): nothing is attached unchecked."""
        ids: list[UUID] = []
        for i, name in enumerate(collections):
            try:
                found = await self.knowledge.GetCollection(
                    knowledge_pb2.GetCollectionRequest(id=name),
                    timeout=self.settings.knowledge_timeout_seconds,
                )
            except NotFound:
                raise InvalidArgument(
                    f"{FIELD}[{i}]: no knowledge collection {name!r} in this tenant",
                    field=f"{FIELD}[{i}]",
                ) from None
            collection_id = UUID(found.id)
            if collection_id in ids:
                raise InvalidArgument(
                    f"{FIELD}[{i}] names collection {found.name} ({found.id}) a second time",
                    field=f"{FIELD}[{i}]",
                )
            ids.append(collection_id)
        return ids

    async def search(self, persona: Persona, query: str) -> list[Source]:
        """The best passages of the persona's collections for `query` (hybrid ranking, at most
        `knowledge_k`, none under `knowledge_min_score`); none when it has no collection, or when
        the knowledge service cannot answer (logged, with the persona and the reason)."""
        if not persona.knowledge_collections or self.settings.knowledge_k == 0:
            return []
        request = knowledge_pb2.SearchRequest(
            query=query[:QUERY_MAX],
            collections=[str(c) for c in persona.knowledge_collections],
            k=self.settings.knowledge_k,
            mode=knowledge_pb2.SEARCH_MODE_HYBRID,
            origin=knowledge_pb2.SEARCH_ORIGIN_TURN,
        )
        try:
            found = await self.knowledge.Search(
                request, timeout=self.settings.knowledge_timeout_seconds
            )
        except ServiceError as exc:
            log.warning(
                "persona %s answers without knowledge passages: %s %s",
                persona.id,
                exc.code.name,
                exc.details,
            )
            return []
        minimum = self.settings.knowledge_min_score
        return [source_of(p) for p in found.passages if p.score >= minimum]
