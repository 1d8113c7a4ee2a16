"""`/api/v1/knowledge/graph`: the entities the tenant's documents name, the relations between
them (each valid over a time range, superseded rather than deleted when a later document
contradicts it) and, for each relation, the passages it was read from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from edrs_proto.knowledge.v1 import knowledge_pb2
from fastapi import APIRouter, Depends, Query
from pydantic import ConfigDict, Field, JsonValue

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.knowledge import (
    EXAMPLE_COLLECTION_ID,
    EXAMPLE_DOCUMENT_ID,
    EXAMPLE_ENTITY_ID,
    CitationOut,
    EntityId,
    knowledge_stub,
    time_of,
    time_or_none,
)
from edrs_gateway.api.models import SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.routes.knowledge import read_knowledge
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/knowledge/graph", tags=["knowledge graph"])

_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_ACME: dict[str, JsonValue] = {
    "id": EXAMPLE_ENTITY_ID,
    "name": "Acme Corp",
    "type": "organization",
    "aliases": ["ACME Corporation"],
    "collectionIds": [EXAMPLE_COLLECTION_ID],
    "mentionCount": 14,
    "createdAt": "2025-01-01T12:00:00Z",
}


class EntityOut(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ACME]})

    id: UUID
    name: str = Field(description="Its preferred name")
    type: str = Field(description="e.g. organization, person, product, place, concept")
    aliases: list[str] = Field(description="Other names it goes by")
    collection_ids: list[UUID] = Field(description="Collections whose passages mention it")
    mention_count: int = Field(description="Passages that mention it")
    created_at: datetime

    @classmethod
    def of(cls, e: knowledge_pb2.Entity) -> EntityOut:
        return cls(
            id=UUID(e.id),
            name=e.name,
            type=e.type,
            aliases=list(e.aliases),
            collection_ids=[UUID(c) for c in e.collection_ids],
            mention_count=e.mention_count,
            created_at=time_of(e.create_time),
        )


class EntityPage(PageOf):
    entities: list[EntityOut]


class RelationSourceOut(ApiModel):
    document_id: UUID
    chunk_id: UUID
    title: str
    text: str = Field(description="The passage the relation was read from")
    citation: CitationOut

    @classmethod
    def of(cls, s: knowledge_pb2.RelationSource) -> RelationSourceOut:
        return cls(
            document_id=UUID(s.document_id),
            chunk_id=UUID(s.chunk_id),
            title=s.title,
            text=s.text,
            citation=CitationOut.of(s.citation),
        )


class RelationOut(ApiModel):
    id: UUID
    subject_id: UUID
    predicate: str = Field(description="Lower snake case, e.g. `acquired`, `ceo_of`")
    object_id: UUID
    valid_from: datetime | None = Field(description="When it became true; null: unknown")
    valid_to: datetime | None = Field(description="When it stopped being true; null: still true")
    superseded_by: UUID | None = Field(description="The relation a later document replaced it by")
    supersede_reason: str | None = Field(description="Why it was superseded")
    sources: list[RelationSourceOut] = Field(description="The passages it was read from")
    created_at: datetime

    @classmethod
    def of(cls, r: knowledge_pb2.Relation) -> RelationOut:
        return cls(
            id=UUID(r.id),
            subject_id=UUID(r.subject_id),
            predicate=r.predicate,
            object_id=UUID(r.object_id),
            valid_from=time_or_none(r, "valid_from"),
            valid_to=time_or_none(r, "valid_to"),
            superseded_by=UUID(r.superseded_by) if r.superseded_by else None,
            supersede_reason=r.supersede_reason or None,
            sources=[RelationSourceOut.of(s) for s in r.sources],
            created_at=time_of(r.create_time),
        )


class NeighbourhoodOut(PageOf):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entity": _ACME,
                    "relations": [
                        {
                            "id": "0190d6a0-0000-7000-8000-0000000000f1",
                            "subjectId": EXAMPLE_ENTITY_ID,
                            "predicate": "acquired",
                            "objectId": "0190d6a0-0000-7000-8000-0000000000e2",
                            "validFrom": "2024-06-01T00:00:00Z",
                            "validTo": None,
                            "supersededBy": None,
                            "supersedeReason": None,
                            "sources": [
                                {
                                    "documentId": EXAMPLE_DOCUMENT_ID,
                                    "chunkId": "0190d6a0-0000-7000-8000-0000000000d3",
                                    "title": "Press release",
                                    "text": "Acme Corp acquired Globex in June 2024.",
                                    "citation": {
                                        "page": 1,
                                        "headingPath": [],
                                        "startOffset": 0,
                                        "endOffset": 39,
                                        "contentHash": "6f1c…",
                                        "documentVersion": 1,
                                        "chunkIndex": 0,
                                    },
                                }
                            ],
                            "createdAt": "2025-01-01T12:00:00Z",
                        }
                    ],
                    "neighbours": [
                        {
                            **_ACME,
                            "id": "0190d6a0-0000-7000-8000-0000000000e2",
                            "name": "Globex",
                            "aliases": [],
                        }
                    ],
                    "nextPageToken": "",
                }
            ]
        }
    )

    entity: EntityOut
    relations: list[RelationOut] = Field(description="Relations it takes part in, either side")
    neighbours: list[EntityOut] = Field(description="The entities at their other ends")


@router.get(
    "/entities",
    response_model=EntityPage,
    summary="List entities",
    description="Oldest first; those mentioned in some `collection`s (repeatable), whose name or an "
    "alias contains `query` (case-insensitive), or of one `type`.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_entities(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
    collection: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100, pattern=SINGLE_LINE)]] | None,
        Query(max_length=100, description="Collection id or name; repeatable, up to 100"),
    ] = None,
    query: Annotated[str, Query(max_length=200, pattern=SINGLE_LINE)] = "",
    type: Annotated[str, Query(max_length=100, pattern=SINGLE_LINE)] = "",
) -> EntityPage:
    request = knowledge_pb2.ListEntitiesRequest(
        collections=collection or [], query=query, type=type
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListEntities(request)
    return EntityPage(
        entities=[EntityOut.of(e) for e in reply.entities],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/entities/{entityId}",
    response_model=EntityOut,
    summary="Get an entity",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_entity(
    entity_id: EntityId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> EntityOut:
    found = await knowledge_stub(ctx).GetEntity(knowledge_pb2.GetEntityRequest(id=str(entity_id)))
    return EntityOut.of(found)


@router.get(
    "/entities/{entityId}/neighbourhood",
    response_model=NeighbourhoodOut,
    summary="An entity's neighbourhood",
    description="The relations the entity takes part in (as subject or object), each with the "
    "passages it was read from, and the entities at their other ends; superseded relations too "
    "with `includeSuperseded=true`. Pages over relations.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def neighbourhood(
    entity_id: EntityId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
    include_superseded: Annotated[bool, Query(alias="includeSuperseded")] = False,
) -> NeighbourhoodOut:
    request = knowledge_pb2.ListEntityRelationsRequest(
        entity_id=str(entity_id), include_superseded=include_superseded
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListEntityRelations(request)
    return NeighbourhoodOut(
        entity=EntityOut.of(reply.entity),
        relations=[RelationOut.of(r) for r in reply.relations],
        neighbours=[EntityOut.of(e) for e in reply.neighbours],
        next_page_token=reply.page.next_page_token,
    )
