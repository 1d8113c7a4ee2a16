"""The persona store port: what the service needs from its datastore, whatever the engine.

State changes that other services may care about write their event to the outbox in the same
transaction, so the adapter is given the service's event writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

if TYPE_CHECKING:
    # Erasure runs in the event inbox's transaction, which lives in PostgreSQL.
    from edrs_events.pg import Connection

# The persona columns UpdatePersona may change, in the order listings name them.
UPDATABLE_FIELDS = (
    "name",
    "role",
    "responsibilities",
    "skills",
    "tone",
    "instructions",
    "voice",
    "voice_speed",
    "tools",
    "tool_policy",
    "knowledge_collections",
)


@dataclass(frozen=True, kw_only=True)
class ToolPolicy:
    """What a persona may do with its tools without a human (persona.proto, ToolPolicy)."""

    write: str = "required"  # allowed | required
    destructive: str = "required"
    max_rounds: int = 0  # 0: the service default
    choice: str = "auto"  # auto | required

    def as_dict(self) -> dict[str, Any]:
        return {
            "write": self.write,
            "destructive": self.destructive,
            "max_rounds": self.max_rounds,
            "choice": self.choice,
        }

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> ToolPolicy:
        return cls(**{k: v for k, v in stored.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, kw_only=True)
class NewPersona:
    name: str
    role: str
    responsibilities: list[str] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    tone: str = ""
    instructions: str = ""
    # The reasoning service's voice that speaks its replies ("": the default) and its rate.
    voice: str = ""
    voice_speed: float = 1.0
    tools: list[str] = field(default_factory=list)
    tool_policy: ToolPolicy = field(default_factory=ToolPolicy)
    # Ids of the knowledge collections its turns search and cite.
    knowledge_collections: list[UUID] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Persona(NewPersona):
    id: UUID
    status: str
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, kw_only=True)
class ConversationKey:
    """A conversation's identity: the client's id is only unique per tenant, persona and user."""

    client_id: str
    persona_id: UUID
    user_id: str
    conversation_id: str


@dataclass(frozen=True, kw_only=True)
class Conversation:
    id: str
    persona_id: UUID
    user_id: str
    message_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Message:
    id: UUID
    conversation_id: str
    role: str
    text: str
    trace_id: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class Relationship:
    """The persona's own record of a user; an empty one when they never talked."""

    persona_id: UUID
    user_id: str
    notes: list[str] = field(default_factory=list)
    interaction_count: int = 0
    first_interaction_at: datetime | None = None
    last_interaction_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Coworker:
    """A co-worker relation seen from `persona_id`'s side."""

    persona_id: UUID
    coworker_id: UUID
    coworker_name: str
    coworker_role: str
    coworker_status: str
    relation: str
    handover: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class UserErased:
    """What erasing a deleted user removed, with every persona of the tenant."""

    relationships: int
    conversations: int
    messages: int


@dataclass(frozen=True, kw_only=True)
class UserData:
    """Everything held about one user of a tenant, with every persona (an access request)."""

    relationships: list[Relationship]
    # Each conversation with its messages, oldest first.
    conversations: list[tuple[Conversation, list[Message]]]


@dataclass(frozen=True, kw_only=True)
class TaskNotice:
    """A finished task (task.task_completed) to tell its requester in their next conversation."""

    task_id: str
    persona_id: str
    user_id: str
    title: str
    status: str
    outcome: str = ""


@dataclass(frozen=True, kw_only=True)
class HeldCall:
    """A tool call a turn held for a human's approval, and what became of it
    (held -> approved -> completed | failed, or rejected | expired)."""

    approval_id: UUID
    persona_id: UUID
    user_id: str
    conversation_id: str
    message_id: UUID
    call_id: str
    tool: str
    arguments: dict[str, Any]
    impact: str
    reason: str = ""
    status: str = "held"
    result: str = ""
    decided_by: str = ""
    comment: str = ""

    @property
    def key(self) -> str:
        """The idempotency key of the call once approved: it runs once per approval."""
        return f"approval:{self.approval_id}"


class PersonaStore(Protocol):
    async def create(self, client_id: str, persona: NewPersona) -> Persona: ...

    async def get(self, client_id: str, persona_id: UUID) -> Persona | None: ...

    async def list_personas(
        self, client_id: str, page_token: str, page_size: int, *, include_archived: bool = False
    ) -> tuple[list[Persona], str]: ...

    async def update(
        self, client_id: str, persona_id: UUID, changes: Mapping[str, Any]
    ) -> Persona: ...

    async def archive(self, client_id: str, persona_id: UUID) -> Persona: ...

    async def add_user_message(self, key: ConversationKey, text: str) -> Message: ...

    async def add_reply(
        self, key: ConversationKey, text: str, trace_id: str, latency_ms: float
    ) -> Message: ...

    async def list_conversations(
        self, client_id: str, persona_id: UUID, user_id: str, page_token: str, page_size: int
    ) -> tuple[list[Conversation], str]: ...

    async def list_messages(
        self, key: ConversationKey, page_token: str, page_size: int
    ) -> tuple[list[Message], str]: ...

    async def get_relationship(
        self, client_id: str, persona_id: UUID, user_id: str
    ) -> Relationship: ...

    async def set_notes(
        self, client_id: str, persona_id: UUID, user_id: str, notes: list[str]
    ) -> Relationship: ...

    async def forget(self, client_id: str, persona_id: UUID, user_id: str) -> int: ...

    async def erase_user(self, conn: Connection, client_id: str, user_id: str) -> UserErased: ...

    async def user_data(self, client_id: str, user_id: str) -> UserData: ...

    async def add_task_notice(
        self, conn: Connection, client_id: str, notice: TaskNotice
    ) -> None: ...

    async def untold_task_notices(
        self, client_id: str, persona_id: UUID, user_id: str, limit: int
    ) -> list[TaskNotice]: ...

    async def mark_task_notices_told(self, client_id: str, task_ids: Sequence[str]) -> None: ...

    async def add_held_call(self, client_id: str, call: HeldCall) -> None: ...

    async def held_call(
        self, conn: Connection | None, client_id: str, approval_id: UUID
    ) -> HeldCall | None: ...

    async def mark_held_call(self, client_id: str, approval_id: UUID, status: str) -> None: ...

    async def untold_call_outcomes(self, key: ConversationKey, limit: int) -> list[HeldCall]:
        """Held calls of the conversation decided (and run, when approved) that no turn told the
        model yet, oldest first."""
        ...

    async def mark_call_outcomes_told(
        self, client_id: str, approval_ids: Sequence[UUID]
    ) -> None: ...

    async def settle_held_call(
        self,
        conn: Connection,
        client_id: str,
        call: HeldCall,
        *,
        status: str,
        result: str,
        decided_by: str,
        comment: str,
        note: str,
    ) -> Message:
        """Records the call's outcome and tells it in its conversation (a `tool` message)."""
        ...

    async def set_coworker(
        self,
        client_id: str,
        persona_id: UUID,
        coworker_id: UUID,
        relation: str,
        handover: str,
    ) -> Coworker: ...

    async def list_coworkers(self, client_id: str, persona_id: UUID) -> list[Coworker]: ...

    async def remove_coworker(
        self, client_id: str, persona_id: UUID, coworker_id: UUID
    ) -> bool: ...
