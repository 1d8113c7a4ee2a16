"""The one interface every chat model backend implements, and the values crossing it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    """One generation's sampling options, defaults already applied."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The answer is constrained to this JSON Schema (GenerationOptions.json_schema).
    json_schema: dict[str, Any] | None = None


@dataclass
class Usage:
    """Filled in by the backend when a generation ends. `prompt_tokens` stays 0 when the backend
    has nothing better than its own `count_tokens`, which the caller already ran."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


class ChatBackend(Protocol):
    kind: str
    """"local" or "openai", as ModelInfo.backend reports it."""
    model: str
    context_window: int

    def stream(
        self, messages: Sequence[Message], options: GenerationOptions, usage: Usage
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's text as it is generated; fill `usage` at the end. Closing the
        generator early (`aclose()`: the caller went away) stops the generation."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the model reads for `messages`, chat template included."""
        ...

    async def close(self) -> None: ...
