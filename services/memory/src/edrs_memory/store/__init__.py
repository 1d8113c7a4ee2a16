"""The memory store's records: what the service keeps, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Whose memory: a persona's, of one user (or of every user when `user_id` is empty)."""

    client_id: str
    persona_id: UUID
    user_id: str = ""


@dataclass(frozen=True, kw_only=True)
class NewEpisode:
    persona_id: UUID
    user_id: str
    text: str
    importance: float
    conversation_id: str = ""
    kind: str = "note"
    role: str = ""
    trace_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Episode(NewEpisode):
    id: UUID
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class RecallCandidate:
    """An episode that may answer a query, with its cosine similarity to the query (None when
    either has no embedding)."""

    episode: Episode
    similarity: float | None


@dataclass(frozen=True, kw_only=True)
class Fact:
    id: UUID
    persona_id: UUID
    user_id: str
    attribute: str
    value: str
    statement: str
    source: str
    source_episode_id: UUID | None
    valid_from: datetime
    valid_to: datetime | None
    superseded_by: UUID | None

    @property
    def current(self) -> bool:
        return self.valid_to is None


@dataclass(frozen=True, kw_only=True)
class FactChanges:
    """What stating facts did: the facts learned and the ones they superseded (now retired)."""

    learned: list[Fact]
    superseded: list[Fact]


@dataclass(frozen=True, kw_only=True)
class WorkingItem:
    id: UUID
    persona_id: UUID
    user_id: str
    conversation_id: str
    text: str
    priority: int
    kind: str
    role: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Forgotten:
    facts: int
    episodes: int
    working_items: int
