"""The persona gRPC servicer: validates requests, scopes them to the caller's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

from edrs_core import FailedPrecondition, InvalidArgument, NotFound, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_persona import tool_use
from edrs_persona.conversation import Conversations, conversation_id, user_id
from edrs_persona.knowledge import KnowledgeSources
from edrs_persona.store import (
    Conversation,
    ConversationKey,
    Coworker,
    Message,
    NewPersona,
    Persona,
    PersonaStore,
)

_STATUS = {
    "active": persona_pb2.PERSONA_STATUS_ACTIVE,
    "archived": persona_pb2.PERSONA_STATUS_ARCHIVED,
}
# Current facts with these attributes are listed on their own in a Relationship.
_LISTED = {"preference": "preferences", "like": "likes", "dislike": "dislikes"}
_RECENT_CONVERSATIONS = 5


def to_proto(p: Persona) -> persona_pb2.Persona:
    return persona_pb2.Persona(
        id=str(p.id),
        name=p.name,
        role=p.role,
        responsibilities=p.responsibilities,
        skills=p.skills,
        tone=p.tone,
        instructions=p.instructions,
        voice=persona_pb2.PersonaVoice(name=p.voice, speed=p.voice_speed),
        tools=p.tools,
        tool_policy=tool_use.policy_to_proto(p.tool_policy),
        knowledge_collections=[str(c) for c in p.knowledge_collections],
        status=_STATUS[p.status],
        create_time=timestamp(p.created_at),
        update_time=timestamp(p.updated_at),
    )


def conversation_to_proto(c: Conversation) -> persona_pb2.Conversation:
    return persona_pb2.Conversation(
        id=c.id,
        persona_id=str(c.persona_id),
        message_count=c.message_count,
        create_time=timestamp(c.created_at),
        update_time=timestamp(c.updated_at),
    )


def message_to_proto(m: Message) -> persona_pb2.Message:
    return persona_pb2.Message(
        id=str(m.id),
        conversation_id=m.conversation_id,
        role=m.role,
        text=m.text,
        trace_id=m.trace_id,
        create_time=timestamp(m.created_at),
    )


def coworker_to_proto(c: Coworker) -> persona_pb2.Coworker:
    return persona_pb2.Coworker(
        persona_id=str(c.persona_id),
        coworker_id=str(c.coworker_id),
        coworker_name=c.coworker_name,
        coworker_role=c.coworker_role,
        relation=c.relation,
        handover=c.handover,
        create_time=timestamp(c.created_at),
    )


# Field checks shared by CreatePersona and UpdatePersona.
def _name(v: str) -> str:
    return validation.text(v, "name", max_length=200)


def _role(v: str) -> str:
    return validation.text(v, "role", max_length=200)


def _responsibilities(v: Any) -> list[str]:
    return validation.text_list(v, "responsibilities", max_items=50, max_length=500)


def _skills(v: Any) -> list[str]:
    return validation.text_list(v, "skills", max_items=50, max_length=200)


def _tone(v: str) -> str:
    return validation.text(v, "tone", max_length=500, required=False)


def _instructions(v: str) -> str:
    return validation.text(v, "instructions", max_length=20_000, required=False)


MAX_KNOWLEDGE_COLLECTIONS = 20


def _knowledge_collections(v: Any) -> list[str]:
    """Collections by id or name (resolved to ids by KnowledgeSources.resolve), at most
    MAX_KNOWLEDGE_COLLECTIONS: each turn searches them all, so the list is kept short."""
    if len(v) > MAX_KNOWLEDGE_COLLECTIONS:
        raise InvalidArgument(
            f"knowledge_collections may name at most {MAX_KNOWLEDGE_COLLECTIONS} collections, "
            f"got {len(v)}",
            field="knowledge_collections",
        )
    return [
        validation.text(value, f"knowledge_collections[{i}]", max_length=100)
        for i, value in enumerate(v)
    ]


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": _name,
    "role": _role,
    "responsibilities": _responsibilities,
    "skills": _skills,
    "tone": _tone,
    "instructions": _instructions,
    "tools": tool_use.tool_names,
    "tool_policy": tool_use.policy_from_proto,
    "knowledge_collections": _knowledge_collections,
}
# The update mask paths UpdatePersona takes: the checked fields, and `voice` (name and speed).
_MASK_PATHS = (*_CHECKS, "voice")
VOICE_SPEED_MIN, VOICE_SPEED_MAX = 0.25, 4.0


class Voices:
    """Checks a persona's voice against the voices the reasoning service offers now."""

    def __init__(self, reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub) -> None:
        self.reasoning = reasoning

    async def check(self, voice: persona_pb2.PersonaVoice, field: str) -> tuple[str, float]:
        """(name, speed) to store; InvalidArgument naming the field when either is wrong."""
        speed = validation.float_range(
            voice.speed or 1.0, f"{field}.speed", low=VOICE_SPEED_MIN, high=VOICE_SPEED_MAX
        )
        name = validation.text(voice.name, f"{field}.name", max_length=100, required=False)
        if name:
            info = await self.reasoning.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
            if name not in info.voices:
                offered = ", ".join(info.voices) or "none: speech is off"
                raise InvalidArgument(
                    f"{field}.name {name!r} is not a voice the reasoning service offers "
                    f"({offered})",
                    field=f"{field}.name",
                )
        return name, speed


def _fact_attribute(value: str) -> str:
    attribute = validation.text(value, "attribute", max_length=64)
    if not (attribute[0].isascii() and attribute[0].islower()) or not all(
        c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in attribute
    ):
        raise InvalidArgument(
            f"attribute must be snake_case (a-z, 0-9 and '_', starting with a letter), "
            f"got {attribute!r}",
            field="attribute",
        )
    return attribute


class PersonaServicer(persona_pb2_grpc.PersonaServiceServicer):
    def __init__(
        self,
        store: PersonaStore,
        memory: memory_pb2_grpc.MemoryServiceAsyncStub,
        conversations: Conversations,
        voices: Voices,
        collections: KnowledgeSources,
    ) -> None:
        self.store = store
        self.memory = memory
        self.conversations = conversations
        self.voices = voices
        self.collections = collections

    async def _persona(self, client_id: str, persona_id: UUID) -> Persona:
        persona = await self.store.get(client_id, persona_id)
        if persona is None:
            raise NotFound(f"persona {persona_id} not found")
        return persona

    # -- personas ---------------------------------------------------------------------------

    async def CreatePersona(  # noqa: N802 (gRPC method name)
        self, request: persona_pb2.CreatePersonaRequest, context: ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        name = _name(request.name)
        role = _role(request.role)
        responsibilities = _responsibilities(request.responsibilities)
        skills = _skills(request.skills)
        tone = _tone(request.tone)
        instructions = _instructions(request.instructions)
        tools = tool_use.tool_names(request.tools)
        tool_policy = tool_use.policy_from_proto(request.tool_policy)
        voice, voice_speed = await self.voices.check(request.voice, "voice")
        knowledge_collections = await self.collections.resolve(
            _knowledge_collections(request.knowledge_collections)
        )
        new = NewPersona(
            name=name,
            role=role,
            responsibilities=responsibilities,
            skills=skills,
            tone=tone,
            instructions=instructions,
            voice=voice,
            voice_speed=voice_speed,
            tools=tools,
            tool_policy=tool_policy,
            knowledge_collections=knowledge_collections,
        )
        return to_proto(await self.store.create(client_id, new))

    async def GetPersona(  # noqa: N802
        self, request: persona_pb2.GetPersonaRequest, context: ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        return to_proto(await self._persona(client_id, parse_id(request.id)))

    async def ListPersonas(  # noqa: N802
        self, request: persona_pb2.ListPersonasRequest, context: ServicerContext
    ) -> persona_pb2.ListPersonasResponse:
        client_id = require_client_id()
        personas, token = await self.store.list_personas(
            client_id,
            request.page.page_token,
            request.page.page_size,
            include_archived=request.include_archived,
        )
        return persona_pb2.ListPersonasResponse(
            personas=[to_proto(p) for p in personas],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def UpdatePersona(  # noqa: N802
        self, request: persona_pb2.UpdatePersonaRequest, context: ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        persona_id = parse_id(request.persona.id, "persona.id")
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument(
                f"update_mask is required: name the fields to change ({', '.join(_MASK_PATHS)})",
                field="update_mask",
            )
        changes: dict[str, Any] = {}
        for i, path in enumerate(paths):
            if path == "voice":
                voice = await self.voices.check(request.persona.voice, "persona.voice")
                changes["voice"], changes["voice_speed"] = voice
                continue
            if path not in _CHECKS:
                raise InvalidArgument(
                    f"update_mask.paths[{i}] {path!r} is not a field UpdatePersona can change; "
                    f"use {', '.join(_MASK_PATHS)}",
                    field=f"update_mask.paths[{i}]",
                )
            changes[path] = _CHECKS[path](getattr(request.persona, path))
        if "knowledge_collections" in changes:
            changes["knowledge_collections"] = await self.collections.resolve(
                changes["knowledge_collections"]
            )
        return to_proto(await self.store.update(client_id, persona_id, changes))

    async def ArchivePersona(  # noqa: N802
        self, request: persona_pb2.ArchivePersonaRequest, context: ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        return to_proto(await self.store.archive(client_id, parse_id(request.id)))

    # -- conversations ----------------------------------------------------------------------

    def Converse(  # noqa: N802
        self, request: persona_pb2.ConverseRequest, context: ServicerContext
    ) -> AsyncIterator[Any]:
        return self.conversations.converse(request)

    async def ListConversations(  # noqa: N802
        self, request: persona_pb2.ListConversationsRequest, context: ServicerContext
    ) -> persona_pb2.ListConversationsResponse:
        client_id = require_client_id()
        persona_id = parse_id(request.persona_id, "persona_id")
        user = user_id(request.user_id)
        await self._persona(client_id, persona_id)
        conversations, token = await self.store.list_conversations(
            client_id, persona_id, user, request.page.page_token, request.page.page_size
        )
        return persona_pb2.ListConversationsResponse(
            conversations=[conversation_to_proto(c) for c in conversations],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def ListMessages(  # noqa: N802
        self, request: persona_pb2.ListMessagesRequest, context: ServicerContext
    ) -> persona_pb2.ListMessagesResponse:
        client_id = require_client_id()
        key = ConversationKey(
            client_id=client_id,
            persona_id=parse_id(request.persona_id, "persona_id"),
            user_id=user_id(request.user_id),
            conversation_id=conversation_id(request.conversation_id),
        )
        await self._persona(client_id, key.persona_id)
        messages, token = await self.store.list_messages(
            key, request.page.page_token, request.page.page_size
        )
        return persona_pb2.ListMessagesResponse(
            messages=[message_to_proto(m) for m in messages],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    # -- relationships ----------------------------------------------------------------------

    async def _subject(self, persona_id: str, user: str) -> tuple[str, UUID, str]:
        """Tenant, persona and user of a relationship call; the persona must exist."""
        client_id = require_client_id()
        pid = parse_id(persona_id, "persona_id")
        uid = user_id(user)
        await self._persona(client_id, pid)
        return client_id, pid, uid

    async def _relationship(
        self, client_id: str, persona_id: UUID, user: str
    ) -> persona_pb2.Relationship:
        facts = await self.memory.ListFacts(
            memory_pb2.ListFactsRequest(
                persona_id=str(persona_id), user_id=user, include_superseded=True
            )
        )
        row = await self.store.get_relationship(client_id, persona_id, user)
        recent, _ = await self.store.list_conversations(
            client_id, persona_id, user, "", _RECENT_CONVERSATIONS
        )
        listed: dict[str, list[str]] = {name: [] for name in _LISTED.values()}
        for fact in facts.facts:
            if fact.attribute in _LISTED and fact.status != "superseded":
                listed[_LISTED[fact.attribute]].append(fact.value)
        relationship = persona_pb2.Relationship(
            persona_id=str(persona_id),
            user_id=user,
            notes=row.notes,
            facts=facts.facts,
            interaction_count=row.interaction_count,
            recent_conversations=[conversation_to_proto(c) for c in recent],
            preferences=listed["preferences"],
            likes=listed["likes"],
            dislikes=listed["dislikes"],
        )
        if row.first_interaction_at is not None:
            relationship.first_interaction_time.CopyFrom(timestamp(row.first_interaction_at))
        if row.last_interaction_at is not None:
            relationship.last_interaction_time.CopyFrom(timestamp(row.last_interaction_at))
        return relationship

    async def GetRelationship(  # noqa: N802
        self, request: persona_pb2.GetRelationshipRequest, context: ServicerContext
    ) -> persona_pb2.Relationship:
        client_id, pid, user = await self._subject(request.persona_id, request.user_id)
        return await self._relationship(client_id, pid, user)

    async def UpdateRelationship(  # noqa: N802
        self, request: persona_pb2.UpdateRelationshipRequest, context: ServicerContext
    ) -> persona_pb2.Relationship:
        notes = validation.text_list(request.notes, "notes", max_items=50, max_length=500)
        client_id, pid, user = await self._subject(request.persona_id, request.user_id)
        await self.store.set_notes(client_id, pid, user, notes)
        return await self._relationship(client_id, pid, user)

    async def CorrectFact(  # noqa: N802
        self, request: persona_pb2.CorrectFactRequest, context: ServicerContext
    ) -> persona_pb2.Relationship:
        attribute = _fact_attribute(request.attribute)
        value = validation.text(request.value, "value", max_length=500)
        client_id, pid, user = await self._subject(request.persona_id, request.user_id)
        await self.memory.AssertFact(
            memory_pb2.AssertFactRequest(
                persona_id=str(pid), user_id=user, attribute=attribute, value=value
            )
        )
        return await self._relationship(client_id, pid, user)

    async def DeleteFact(  # noqa: N802
        self, request: persona_pb2.DeleteFactRequest, context: ServicerContext
    ) -> persona_pb2.Relationship:
        fact_id = parse_id(request.fact_id, "fact_id")
        client_id, pid, user = await self._subject(request.persona_id, request.user_id)
        await self.memory.DeleteFact(
            memory_pb2.DeleteFactRequest(persona_id=str(pid), user_id=user, fact_id=str(fact_id))
        )
        return await self._relationship(client_id, pid, user)

    async def ForgetRelationship(  # noqa: N802
        self, request: persona_pb2.ForgetRelationshipRequest, context: ServicerContext
    ) -> persona_pb2.ForgetRelationshipResponse:
        client_id, pid, user = await self._subject(request.persona_id, request.user_id)
        # Memory first: if it fails, nothing is deleted here and the call can simply be retried.
        forgotten = await self.memory.ForgetUser(
            memory_pb2.ForgetUserRequest(persona_id=str(pid), user_id=user)
        )
        messages_deleted = await self.store.forget(client_id, pid, user)
        return persona_pb2.ForgetRelationshipResponse(
            facts_deleted=forgotten.facts_deleted,
            episodes_deleted=forgotten.episodes_deleted,
            messages_deleted=messages_deleted,
        )

    async def ExportUser(  # noqa: N802
        self, request: persona_pb2.ExportUserRequest, context: ServicerContext
    ) -> persona_pb2.ExportUserResponse:
        client_id = require_client_id()
        data = await self.store.user_data(client_id, user_id(request.user_id))
        relationships = []
        for r in data.relationships:
            relationship = persona_pb2.Relationship(
                persona_id=str(r.persona_id),
                user_id=r.user_id,
                notes=r.notes,
                interaction_count=r.interaction_count,
            )
            if r.first_interaction_at is not None:
                relationship.first_interaction_time.CopyFrom(timestamp(r.first_interaction_at))
            if r.last_interaction_at is not None:
                relationship.last_interaction_time.CopyFrom(timestamp(r.last_interaction_at))
            relationships.append(relationship)
        return persona_pb2.ExportUserResponse(
            relationships=relationships,
            conversations=[
                persona_pb2.ExportedConversation(
                    conversation=conversation_to_proto(c),
                    messages=[message_to_proto(m) for m in messages],
                )
                for c, messages in data.conversations
            ],
        )

    # -- co-workers -------------------------------------------------------------------------

    async def SetCoworker(  # noqa: N802
        self, request: persona_pb2.SetCoworkerRequest, context: ServicerContext
    ) -> persona_pb2.Coworker:
        client_id = require_client_id()
        pid = parse_id(request.persona_id, "persona_id")
        cid = parse_id(request.coworker_id, "coworker_id")
        if pid == cid:
            raise InvalidArgument(
                "coworker_id must name another persona than persona_id", field="coworker_id"
            )
        relation = validation.text(request.relation, "relation", max_length=200, required=False)
        handover = validation.text(request.handover, "handover", max_length=2000, required=False)
        for persona_id in (pid, cid):
            persona = await self._persona(client_id, persona_id)
            if not persona.active:
                raise FailedPrecondition(f"persona {persona_id} is archived and takes no new work")
        return coworker_to_proto(
            await self.store.set_coworker(client_id, pid, cid, relation, handover)
        )

    async def ListCoworkers(  # noqa: N802
        self, request: persona_pb2.ListCoworkersRequest, context: ServicerContext
    ) -> persona_pb2.ListCoworkersResponse:
        client_id = require_client_id()
        pid = parse_id(request.persona_id, "persona_id")
        await self._persona(client_id, pid)
        coworkers = await self.store.list_coworkers(client_id, pid)
        return persona_pb2.ListCoworkersResponse(
            coworkers=[coworker_to_proto(c) for c in coworkers]
        )

    async def RemoveCoworker(  # noqa: N802
        self, request: persona_pb2.RemoveCoworkerRequest, context: ServicerContext
    ) -> persona_pb2.RemoveCoworkerResponse:
        client_id = require_client_id()
        pid = parse_id(request.persona_id, "persona_id")
        cid = parse_id(request.coworker_id, "coworker_id")
        await self._persona(client_id, pid)
        if not await self.store.remove_coworker(client_id, pid, cid):
            raise NotFound(f"persona {pid} has no co-worker {cid}")
        return persona_pb2.RemoveCoworkerResponse()
