"""The trace store port: what the reasoning service needs from its datastore, whatever the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class TraceSample:
    text: str
    answer: str = ""
    completion_tokens: int = 0
    generation_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class NewTrace:
    """One finished reasoning run, as the strategy that ran it reports it.

    `messages` are the caller's; `prompt` is what the model read (strategy instructions included),
    one message per line. `context` items are dicts with id, source, text and score."""

    strategy: str
    prompt: str
    answer: str
    confidence: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    messages: list[dict[str, str]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)
    samples: list[TraceSample] = field(default_factory=list)
    unsupported_claims: list[str] = field(default_factory=list)
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    draft: str = ""


@dataclass(frozen=True, kw_only=True)
class Trace(NewTrace):
    id: UUID
    created_at: datetime


# Called inside the transaction that stores the trace, so an event written to the outbox commits
# (or not) with it.
OnRecorded = Callable[[Any, Trace], Awaitable[None]]


class TraceStore(Protocol):
    async def record(
        self, client_id: str, trace: NewTrace, on_recorded: OnRecorded | None = None
    ) -> Trace: ...

    async def get(self, client_id: str, trace_id: UUID) -> Trace | None: ...

    async def list(
        self,
        client_id: str,
        page_token: str,
        page_size: int,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Trace], str]:
        """Newest first; only traces whose labels include every pair of `labels`."""
        ...
