"""`/api/v1/knowledge/collections/{collection}/gaps`: learning gaps, the questions a collection
answered poorly in recent searches (persona turns, research plans, API clients), as topics to add
to it (docs/knowledge.md, "Learning gaps")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from edrs_proto.knowledge.v1 import knowledge_pb2
from fastapi import APIRouter, Depends, Query
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.knowledge import CollectionRef, knowledge_stub, time_of
from edrs_gateway.api.models import ApiModel, PageOf
from edrs_gateway.api.routes.knowledge import write_knowledge
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/knowledge", tags=["knowledge"])

_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}

Origin = Literal["api", "turn", "research"]
ORIGINS: dict[int, Origin] = {
    knowledge_pb2.SEARCH_ORIGIN_API: "api",
    knowledge_pb2.SEARCH_ORIGIN_TURN: "turn",
    knowledge_pb2.SEARCH_ORIGIN_RESEARCH: "research",
}
WINDOW_DAYS_MAX = 365


class GapOut(ApiModel):
    normalized_query: str = Field(
        description="The grouping key: lower case, punctuation dropped, one space between words"
    )
    query: str = Field(description="The latest search's query, as it was asked")
    count: int = Field(description="Searches of the window with this normalised query")
    no_passage_count: int = Field(description="Of them, those that found no passage at all")
    first_asked_at: datetime
    last_asked_at: datetime
    best_similarity: float | None = Field(
        description="The best vector similarity (cosine, -1..1) any of them reached; null when "
        "none ran a vector ranking that found a passage"
    )
    best_score: float | None = Field(
        description="The best score of a passage any of them returned (the mode's: fused in "
        "hybrid); null when none returned a passage"
    )
    asked_from: list[Origin] = Field(
        description="Where the searches came from: `api` (API clients), `turn` (a persona's "
        "conversation turn), `research` (a research plan)"
    )

    @classmethod
    def of(cls, g: knowledge_pb2.LearningGap) -> GapOut:
        return cls(
            normalized_query=g.normalized_query,
            query=g.query,
            count=g.count,
            no_passage_count=g.no_passage_count,
            first_asked_at=time_of(g.first_ask_time),
            last_asked_at=time_of(g.last_ask_time),
            best_similarity=g.best_similarity if g.HasField("best_similarity") else None,
            best_score=g.best_score if g.HasField("best_score") else None,
            asked_from=[ORIGINS[o] for o in g.origins if o in ORIGINS],
        )


class GapPage(PageOf):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "gaps": [
                        {
                            "normalizedQuery": "how do i expense a rental car",
                            "query": "How do I expense a rental car?",
                            "count": 4,
                            "noPassageCount": 0,
                            "firstAskedAt": "2025-01-02T09:30:00Z",
                            "lastAskedAt": "2025-01-09T16:05:00Z",
                            "bestSimilarity": 0.31,
                            "bestScore": 0.412,
                            "askedFrom": ["api", "turn"],
                        }
                    ],
                    "maxSimilarity": 0.5,
                    "windowDays": 30,
                    "nextPageToken": "",
                }
            ]
        }
    )

    gaps: list[GapOut] = Field(
        description="Worst first: lowest best similarity (none at all first), then most asked"
    )
    max_similarity: float = Field(description="The threshold that was applied")
    window_days: int = Field(description="The window that was applied")


@router.get(
    "/collections/{collection}/gaps",
    response_model=GapPage,
    summary="Learning gaps: questions a collection answered poorly",
    description=(
        "The questions asked of this collection in the last `windowDays` days (persona turns, "
        "research plans, API searches) that it answered poorly every time: no passage found, or "
        "a best vector similarity below `maxSimilarity` (default 0.5, the service's setting). "
        "Grouped by normalised query (case, punctuation and spacing aside), worst first, each "
        "with how often and when it was asked, the best scores seen and where it came from: "
        "topics to add to the collection. Needs `knowledge:write` (the queries are other "
        "members' questions). 404 when the collection does not exist."
    ),
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_gaps(
    collection: CollectionRef,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(write_knowledge)],
    window_days: Annotated[
        int,
        Query(alias="windowDays", ge=1, le=WINDOW_DAYS_MAX, description="Days back (default 30)"),
    ] = 30,
    max_similarity: Annotated[
        float | None,
        Query(
            alias="maxSimilarity",
            ge=-1.0,
            le=1.0,
            description="A search whose best vector similarity is below this answered poorly "
            "(default: the service's, 0.5)",
        ),
    ] = None,
) -> GapPage:
    request = knowledge_pb2.ListLearningGapsRequest(collection=collection, window_days=window_days)
    if max_similarity is not None:
        request.max_similarity = max_similarity
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListLearningGaps(request)
    return GapPage(
        gaps=[GapOut.of(g) for g in reply.gaps],
        max_similarity=reply.max_similarity,
        window_days=reply.window_days,
        next_page_token=reply.page.next_page_token,
    )
