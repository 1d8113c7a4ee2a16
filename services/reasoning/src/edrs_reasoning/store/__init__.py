"""The trace store port: what the reasoning service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewTrace:
    """One finished reasoning run, as the strategy that ran it reports it."""

    strategy: str
    prompt: str
    answer: str
    confidence: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Trace(NewTrace):
    id: UUID
    created_at: datetime


class TraceStore(Protocol):
    async def record(self, client_id: str, trace: NewTrace) -> Trace: ...

    async def get(self, client_id: str, trace_id: UUID) -> Trace | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Trace], str]:
        """Newest first."""
        ...
