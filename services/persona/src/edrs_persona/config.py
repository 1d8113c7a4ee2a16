"""Persona service settings (`EDRS_PERSONA_*`)."""

from typing import ClassVar, Literal

from edrs_core import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class PersonaSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_PERSONA_")
    service_name: ClassVar[str] = "persona"

    # Concurrent turns of one conversation (docs/conversation.md).
    turn_policy: Literal["queue", "reject"] = Field(
        default="queue",
        description="A message arriving while a turn of its conversation runs: wait, or ABORTED",
    )
    max_queued_turns: int = Field(
        default=8, ge=1, le=1000, description="Turns that may wait per conversation"
    )
    turn_lock_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Lifetime of a conversation's turn lock; longer than any turn, so a crashed "
        "replica cannot block a conversation for longer than this",
    )

    # What a turn gathers and how it fits the model.
    recall_limit: int = Field(default=5, ge=0, le=50, description="Memories recalled per turn")
    history_items: int = Field(
        default=12, ge=0, le=200, description="Working-memory messages given as history"
    )
    default_max_tokens: int = Field(
        default=192, ge=1, description="Reply length when a request leaves max_tokens at 0"
    )
    prompt_safety_margin: int = Field(
        default=64, ge=0, description="Tokens kept free besides the reply, for estimate error"
    )
    model_info_cache_seconds: float = Field(default=60.0, ge=0)

    # Knowledge collections attached to a persona (docs/conversation.md, "Knowledge and citations").
    knowledge_k: int = Field(
        default=4,
        ge=0,
        le=20,
        description="Passages retrieved per turn from the persona's collections (0: none)",
    )
    knowledge_min_score: float = Field(
        default=0.0,
        ge=0,
        description="Passages scoring below this are not given to the model",
    )

    # Peer call deadlines (the fleet default rpc_timeout_seconds is too short for a model).
    memory_timeout_seconds: float = Field(default=30.0, gt=0)
    # A turn waits this long for its passages, then answers without them.
    knowledge_timeout_seconds: float = Field(default=10.0, gt=0)
    generation_timeout_seconds: float = Field(default=300.0, gt=0)

    # Tool use in a turn (docs/integration.md, "Tool use in a turn").
    tool_rounds: int = Field(
        default=3, ge=1, le=8, description="Rounds of tool calls a turn may make by default"
    )
    tool_decision_max_tokens: int = Field(
        default=200, ge=16, description="Tokens for the model's choice of a tool call"
    )
    tool_call_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    tool_result_prompt_chars: int = Field(
        default=2_000, ge=100, description="A tool's result is cut to this length for the model"
    )
