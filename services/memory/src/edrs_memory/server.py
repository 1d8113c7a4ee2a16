"""The memory gRPC servicer: validates requests, scopes them to the caller's tenant, and ties
episodes, recall, working memory and facts together."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

from edrs_core import ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.errors import InvalidArgument, NotFound
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc

from edrs_memory import facts, recall
from edrs_memory.embeddings import Embedder, Vector
from edrs_memory.late_embedding import LateEmbeddings
from edrs_memory.store import Episode, Fact, NewEpisode, Scope, WorkingItem
from edrs_memory.store.postgres import PostgresMemoryStore
from edrs_memory.working import WorkingMemory

DEFAULT_IMPORTANCE = 0.5
# A user's message that stated a fact matters more than small talk; replies matter less.
USER_IMPORTANCE, USER_FACT_IMPORTANCE, REPLY_IMPORTANCE = 0.5, 0.8, 0.4
TURN_PRIORITY = 3
DEFAULT_RECALL_LIMIT = 10
MAX_RECALL_LIMIT = 100
MAX_TEXT = 20_000
MAX_TTL = 604_800
_ATTRIBUTE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KINDS = ("message", "event", "note")
_ROLES = ("", "user", "assistant")


def memory_proto(m: Episode) -> memory_pb2.Memory:
    return memory_pb2.Memory(
        id=str(m.id),
        persona_id=str(m.persona_id),
        user_id=m.user_id,
        conversation_id=m.conversation_id,
        text=m.text,
        importance=m.importance,
        create_time=timestamp(m.created_at),
        kind=m.kind,
        role=m.role,
    )


def fact_proto(f: Fact) -> memory_pb2.Fact:
    proto = memory_pb2.Fact(
        id=str(f.id),
        persona_id=str(f.persona_id),
        user_id=f.user_id,
        attribute=f.attribute,
        value=f.value,
        statement=f.statement,
        source=f.source,
        source_episode_id=str(f.source_episode_id or ""),
        valid_from=timestamp(f.valid_from),
        superseded_by=str(f.superseded_by or ""),
        status="current" if f.current else "superseded",
    )
    if f.valid_to is not None:
        proto.valid_to.CopyFrom(timestamp(f.valid_to))
    return proto


def working_proto(i: WorkingItem) -> memory_pb2.WorkingItem:
    return memory_pb2.WorkingItem(
        id=str(i.id),
        persona_id=str(i.persona_id),
        user_id=i.user_id,
        conversation_id=i.conversation_id,
        text=i.text,
        priority=i.priority,
        kind=i.kind,
        role=i.role,
        create_time=timestamp(i.created_at),
        expire_time=timestamp(i.expires_at),
    )


def _persona_id(value: str) -> UUID:
    # "is required" reads better than "must be a UUID, got ''" for a missing id.
    return parse_id(validation.text(value, "persona_id", max_length=100), "persona_id")


def _user_id(value: str, *, required: bool = True) -> str:
    return validation.text(value, "user_id", max_length=200, required=required)


def _conversation_id(value: str, field: str = "conversation_id", *, required: bool = True) -> str:
    return validation.text(value, field, max_length=200, required=required)


def _scope(persona_id: str, user_id: str, *, user_required: bool = True) -> Scope:
    return Scope(
        client_id=require_client_id(),
        persona_id=_persona_id(persona_id),
        user_id=_user_id(user_id, required=user_required),
    )


def _choice(value: str, field: str, choices: tuple[str, ...], default: str) -> str:
    value = value.strip() or default
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices if c)
        raise InvalidArgument(f"{field} must be one of {allowed}, got {value!r}", field=field)
    return value


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(
        self,
        store: PostgresMemoryStore,
        working: WorkingMemory,
        embedder: Embedder,
        policy: recall.RecallPolicy,
        late: LateEmbeddings,
    ) -> None:
        self.store = store
        self.working = working
        self.embedder = embedder
        self.policy = policy
        self.late = late

    async def Remember(  # noqa: N802 (gRPC method name)
        self, request: memory_pb2.RememberRequest, context: ServicerContext
    ) -> memory_pb2.Memory:
        scope = _scope(request.persona_id, request.user_id)
        # proto3 cannot tell an unset double from 0, so 0 means "not given".
        importance = validation.float_range(request.importance, "importance", low=0.0, high=1.0)
        episode = NewEpisode(
            persona_id=scope.persona_id,
            user_id=scope.user_id,
            conversation_id=_conversation_id(request.conversation_id, required=False),
            text=validation.text(request.text, "text", max_length=MAX_TEXT),
            importance=importance or DEFAULT_IMPORTANCE,
            kind=_choice(request.kind, "kind", _KINDS, "note"),
            role=_choice(request.role, "role", _ROLES, ""),
        )
        [vector] = await self.embedder.embed([episode.text])
        async with self.store.transaction() as conn:
            [stored] = await self.store.add_episodes(conn, scope.client_id, [(episode, vector)])
        return memory_proto(stored)

    async def Recall(  # noqa: N802
        self, request: memory_pb2.RecallRequest, context: ServicerContext
    ) -> memory_pb2.RecallResponse:
        scope = _scope(request.persona_id, request.user_id, user_required=False)
        query = validation.text(request.query, "query", max_length=2_000, required=False)
        exclude = _conversation_id(
            request.exclude_conversation_id, "exclude_conversation_id", required=False
        )
        limit = validation.limit(
            request.limit, "limit", default=DEFAULT_RECALL_LIMIT, maximum=MAX_RECALL_LIMIT
        )
        vector = (await self.embedder.embed([query]))[0] if query else None
        candidates = await self.store.recall_candidates(
            scope,
            vector,
            exclude_conversation_id=exclude,
            nearest=max(self.policy.nearest, limit),
            recent=self.policy.recent,
        )
        best = recall.rank(candidates, now=datetime.now(UTC), limit=limit, policy=self.policy)
        return memory_pb2.RecallResponse(
            memories=[
                memory_pb2.ScoredMemory(
                    memory=memory_proto(s.episode),
                    score=s.parts.score,
                    recency=s.parts.recency,
                    importance=s.parts.importance,
                    relevance=s.parts.relevance,
                )
                for s in best
            ]
        )

    async def RecordTurn(  # noqa: N802
        self, request: memory_pb2.RecordTurnRequest, context: ServicerContext
    ) -> memory_pb2.RecordTurnResponse:
        scope = _scope(request.persona_id, request.user_id)
        conversation_id = _conversation_id(request.conversation_id)
        user_text = validation.text(request.user_text, "user_text", max_length=MAX_TEXT)
        reply_text = validation.text(
            request.reply_text, "reply_text", max_length=MAX_TEXT, required=False
        )
        trace_id = validation.text(request.trace_id, "trace_id", max_length=200, required=False)
        stated = facts.extract(user_text)
        turn = [
            NewEpisode(
                persona_id=scope.persona_id,
                user_id=scope.user_id,
                conversation_id=conversation_id,
                kind="message",
                role="user",
                text=user_text,
                importance=USER_FACT_IMPORTANCE if stated else USER_IMPORTANCE,
            )
        ]
        if reply_text:
            turn.append(
                NewEpisode(
                    persona_id=scope.persona_id,
                    user_id=scope.user_id,
                    conversation_id=conversation_id,
                    kind="message",
                    role="assistant",
                    text=reply_text,
                    importance=REPLY_IMPORTANCE,
                    trace_id=trace_id,
                )
            )
        # The user's message is embedded now (recall may look for it at once; the turn's own
        # recall has usually cached its vector); the reply after this call returns.
        [user_vector] = await self.embedder.embed([user_text])
        vectors: list[Vector | None] = [user_vector, *([None] * (len(turn) - 1))]
        items = [
            self.working.new_item(
                scope, conversation_id, e.text, priority=TURN_PRIORITY, kind="message", role=e.role
            )
            for e in turn
        ]
        async with self.store.transaction() as conn:
            episodes = await self.store.add_episodes(
                conn, scope.client_id, list(zip(turn, vectors, strict=True))
            )
            changes = await self.store.state_facts(
                conn,
                scope,
                [(f.attribute, f.value, f.statement) for f in stated],
                source="rule",
                source_episode_id=episodes[0].id,
            )
            await self.store.add_working_items(conn, scope.client_id, items)
        self.late.add(scope.client_id, episodes[1:])
        await self.working.publish(scope, conversation_id, items)
        return memory_pb2.RecordTurnResponse(
            episodes=[memory_proto(e) for e in episodes],
            learned=[fact_proto(f) for f in changes.learned],
            superseded=[fact_proto(f) for f in changes.superseded],
        )

    async def PutWorkingItem(  # noqa: N802
        self, request: memory_pb2.PutWorkingItemRequest, context: ServicerContext
    ) -> memory_pb2.WorkingItem:
        scope = _scope(request.persona_id, request.user_id)
        conversation_id = _conversation_id(request.conversation_id)
        text = validation.text(request.text, "text", max_length=MAX_TEXT)
        priority = validation.int_range(
            request.priority or TURN_PRIORITY, "priority", low=1, high=5
        )
        ttl = validation.int_range(
            request.ttl_seconds or self.working.default_ttl, "ttl_seconds", low=1, high=MAX_TTL
        )
        item = self.working.new_item(
            scope,
            conversation_id,
            text,
            priority=priority,
            kind=_choice(request.kind, "kind", ("message", "note"), "note"),
            role=_choice(request.role, "role", _ROLES, ""),
            ttl_seconds=ttl,
        )
        async with self.store.transaction() as conn:
            await self.store.add_working_items(conn, scope.client_id, [item])
        await self.working.publish(scope, conversation_id, [item])
        return working_proto(item)

    async def ListWorkingItems(  # noqa: N802
        self, request: memory_pb2.ListWorkingItemsRequest, context: ServicerContext
    ) -> memory_pb2.ListWorkingItemsResponse:
        scope = _scope(request.persona_id, request.user_id)
        conversation_id = _conversation_id(request.conversation_id)
        limit = validation.limit(request.limit, "limit", default=0, maximum=self.working.max_items)
        items = await self.working.live_items(scope, conversation_id, limit)
        return memory_pb2.ListWorkingItemsResponse(items=[working_proto(i) for i in items])

    async def ListFacts(  # noqa: N802
        self, request: memory_pb2.ListFactsRequest, context: ServicerContext
    ) -> memory_pb2.ListFactsResponse:
        scope = _scope(request.persona_id, request.user_id)
        found = await self.store.list_facts(scope, include_superseded=request.include_superseded)
        return memory_pb2.ListFactsResponse(facts=[fact_proto(f) for f in found])

    async def AssertFact(  # noqa: N802
        self, request: memory_pb2.AssertFactRequest, context: ServicerContext
    ) -> memory_pb2.AssertFactResponse:
        scope = _scope(request.persona_id, request.user_id)
        attribute = validation.text(request.attribute, "attribute", max_length=64)
        if not _ATTRIBUTE.match(attribute):
            raise InvalidArgument(
                f"attribute must be snake_case (a-z, 0-9, _; starting with a letter), "
                f"got {attribute!r}",
                field="attribute",
            )
        value = validation.text(request.value, "value", max_length=500)
        async with self.store.transaction() as conn:
            changes = await self.store.state_facts(
                conn, scope, [(attribute, value, value)], source="user"
            )
            if changes.learned:
                fact = changes.learned[0]
            else:
                # The same value is already current: nothing changes, the current fact answers.
                # Read under the transaction's per-user lock, so a concurrent turn can't replace
                # it in between.
                fact = next(
                    f
                    for f in await self.store.list_facts(scope, include_superseded=False, conn=conn)
                    if f.attribute == attribute
                    and facts.normalise(f.value) == facts.normalise(value)
                )
        return memory_pb2.AssertFactResponse(
            fact=fact_proto(fact), superseded=[fact_proto(f) for f in changes.superseded]
        )

    async def DeleteFact(  # noqa: N802
        self, request: memory_pb2.DeleteFactRequest, context: ServicerContext
    ) -> memory_pb2.DeleteFactResponse:
        scope = _scope(request.persona_id, request.user_id)
        fact_id = parse_id(validation.text(request.fact_id, "fact_id", max_length=100), "fact_id")
        if not await self.store.delete_fact(scope, fact_id):
            raise NotFound(f"fact {fact_id} not found", field="fact_id")
        return memory_pb2.DeleteFactResponse()

    async def ForgetUser(  # noqa: N802
        self, request: memory_pb2.ForgetUserRequest, context: ServicerContext
    ) -> memory_pb2.ForgetUserResponse:
        scope = _scope(request.persona_id, request.user_id)
        counts, conversations = await self.store.forget_user(scope)
        await self.working.drop(scope, conversations)
        return memory_pb2.ForgetUserResponse(
            facts_deleted=counts.facts,
            episodes_deleted=counts.episodes,
            working_items_deleted=counts.working_items,
        )

    async def ExportUser(  # noqa: N802
        self, request: memory_pb2.ExportUserRequest, context: ServicerContext
    ) -> memory_pb2.ExportUserResponse:
        client_id = require_client_id()
        episodes, held_facts, working = await self.store.user_data(
            client_id, _user_id(request.user_id)
        )
        return memory_pb2.ExportUserResponse(
            episodes=[memory_proto(e) for e in episodes],
            facts=[fact_proto(f) for f in held_facts],
            working_items=[working_proto(i) for i in working],
        )
