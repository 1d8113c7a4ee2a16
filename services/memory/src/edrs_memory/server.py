"""The memory gRPC servicer: validates requests, scopes them to the caller's tenant, ranks recall."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import grpc
from edrs_core import validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc

from edrs_memory import recall
from edrs_memory.store import Memory, MemoryStore, NewMemory

DEFAULT_IMPORTANCE = 0.5
DEFAULT_RECALL_LIMIT = 10
MAX_RECALL_LIMIT = 100


def to_proto(m: Memory) -> memory_pb2.Memory:
    return memory_pb2.Memory(
        id=str(m.id),
        persona_id=str(m.persona_id),
        user_id=m.user_id,
        conversation_id=m.conversation_id,
        text=m.text,
        importance=m.importance,
        create_time=timestamp(m.created_at),
    )


def _persona_id(value: str) -> UUID:
    # "is required" reads better than "must be a UUID, got ''" for a missing id.
    return parse_id(validation.text(value, "persona_id", max_length=100), "persona_id")


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, store: MemoryStore, policy: recall.RecallPolicy) -> None:
        self.store = store
        self.policy = policy

    async def Remember(  # noqa: N802 (gRPC method name)
        self, request: memory_pb2.RememberRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.Memory:
        client_id = require_client_id()
        # proto3 cannot tell an unset double from 0, so 0 means "not given".
        importance = validation.float_range(request.importance, "importance", low=0.0, high=1.0)
        new = NewMemory(
            persona_id=_persona_id(request.persona_id),
            user_id=validation.text(request.user_id, "user_id", max_length=200),
            conversation_id=validation.text(
                request.conversation_id, "conversation_id", max_length=200, required=False
            ),
            text=validation.text(request.text, "text", max_length=20_000),
            importance=importance or DEFAULT_IMPORTANCE,
        )
        return to_proto(await self.store.create(client_id, new))

    async def Recall(  # noqa: N802
        self, request: memory_pb2.RecallRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.RecallResponse:
        client_id = require_client_id()
        persona_id = _persona_id(request.persona_id)
        user_id = validation.text(request.user_id, "user_id", max_length=200, required=False)
        query = validation.text(request.query, "query", max_length=2_000, required=False)
        limit = validation.limit(
            request.limit, "limit", default=DEFAULT_RECALL_LIMIT, maximum=MAX_RECALL_LIMIT
        )
        candidates = await self.store.candidates(
            client_id, persona_id, user_id, query, per_source=self.policy.candidates
        )
        best = recall.rank(candidates, now=datetime.now(UTC), limit=limit, policy=self.policy)
        return memory_pb2.RecallResponse(
            memories=[
                memory_pb2.ScoredMemory(
                    memory=to_proto(s.memory),
                    score=s.parts.score,
                    recency=s.parts.recency,
                    importance=s.parts.importance,
                    relevance=s.parts.relevance,
                )
                for s in best
            ]
        )
