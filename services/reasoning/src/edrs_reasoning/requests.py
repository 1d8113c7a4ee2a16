"""Checks of incoming reasoning requests, turned into plain values; each failure names its field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edrs_core import InvalidArgument, validation
from edrs_proto.reasoning.v1 import reasoning_pb2

from edrs_reasoning import strategies
from edrs_reasoning.backends.base import GenerationOptions, Message
from edrs_reasoning.config import ReasoningSettings

MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 50_000
ROLES = ("system", "user", "assistant")
MAX_CONTEXT_ITEMS = 100
MAX_CONTEXT_TEXT_CHARS = 20_000
MAX_CONTEXT_ID_CHARS = 200
MAX_CONTEXT_SOURCE_CHARS = 100
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_SAMPLES = 16
MAX_DRAFT_CHARS = 50_000
MAX_LABELS = 16
MAX_JSON_SCHEMA_CHARS = 50_000
# llama.cpp spells a length or count bound out in its grammar (`maxLength: 10**9` is gigabytes of
# grammar: the service ran out of memory), so a schema's bounds together are capped.
MAX_JSON_SCHEMA_BOUNDS = 100_000
_BOUND_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_PATTERN_BOUND = re.compile(r"\{(\d+)(?:,(\d*))?\}")
MAX_LABEL_VALUE_CHARS = 200
_LABEL_KEY = re.compile(r"[a-z0-9_]{1,64}")
MAX_EMBED_TEXTS = 256
MAX_EMBED_CHARS = 20_000

_STRATEGIES = {
    reasoning_pb2.STRATEGY_UNSPECIFIED: strategies.DIRECT,
    reasoning_pb2.STRATEGY_DIRECT: strategies.DIRECT,
    reasoning_pb2.STRATEGY_CHAIN_OF_THOUGHT: strategies.CHAIN_OF_THOUGHT,
    reasoning_pb2.STRATEGY_SELF_CONSISTENCY: strategies.SELF_CONSISTENCY,
    reasoning_pb2.STRATEGY_VERIFY: strategies.VERIFY,
}


@dataclass(frozen=True)
class ContextItem:
    id: str
    source: str
    text: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "text": self.text, "score": self.score}


@dataclass(frozen=True)
class ReasonCall:
    messages: list[Message]
    context: list[ContextItem]
    strategy: str
    options: GenerationOptions
    samples: int
    draft: str
    labels: dict[str, str] = field(default_factory=dict)


def _content(value: str, field: str, max_length: int) -> str:
    """Message text is kept as written (white space matters to a model); only size is checked."""
    if not value.strip():
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > max_length:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; the limit is {max_length}", field=field
        )
    return value


def messages(values: Sequence[reasoning_pb2.ChatMessage]) -> list[Message]:
    if not values:
        raise InvalidArgument("messages is required: at least one user message", field="messages")
    if len(values) > MAX_MESSAGES:
        raise InvalidArgument(
            f"messages has {len(values)} items; the limit is {MAX_MESSAGES}", field="messages"
        )
    out = []
    for i, m in enumerate(values):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {m.role!r}",
                field=f"messages[{i}].role",
            )
        out.append(
            Message(m.role, _content(m.content, f"messages[{i}].content", MAX_MESSAGE_CHARS))
        )
    if out[-1].role != "user":
        last = len(out) - 1
        raise InvalidArgument(
            f"messages[{last}].role must be user: the conversation ends with the user's message",
            field=f"messages[{last}].role",
        )
    return out


def context(values: Sequence[reasoning_pb2.ContextItem]) -> list[ContextItem]:
    if len(values) > MAX_CONTEXT_ITEMS:
        raise InvalidArgument(
            f"context has {len(values)} items; the limit is {MAX_CONTEXT_ITEMS}", field="context"
        )
    return [
        ContextItem(
            id=validation.text(
                c.id, f"context[{i}].id", max_length=MAX_CONTEXT_ID_CHARS, required=False
            ),
            source=validation.text(
                c.source,
                f"context[{i}].source",
                max_length=MAX_CONTEXT_SOURCE_CHARS,
                required=False,
            ),
            text=_content(c.text, f"context[{i}].text", MAX_CONTEXT_TEXT_CHARS),
            score=c.score,
        )
        for i, c in enumerate(values)
    ]


def options(
    value: reasoning_pb2.GenerationOptions, settings: ReasoningSettings
) -> GenerationOptions:
    max_tokens = value.max_tokens or settings.default_max_tokens
    validation.int_range(max_tokens, "options.max_tokens", low=1, high=settings.max_output_tokens)
    temperature = (
        value.temperature if value.HasField("temperature") else settings.default_temperature
    )
    validation.float_range(temperature, "options.temperature", low=0.0, high=2.0)
    top_p = value.top_p if value.HasField("top_p") else settings.default_top_p
    if not 0 < top_p <= 1:
        raise InvalidArgument(
            f"options.top_p must be above 0 and at most 1, got {top_p}", field="options.top_p"
        )
    if len(value.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(
            f"options.stop has {len(value.stop)} items; the limit is {MAX_STOP_SEQUENCES}",
            field="options.stop",
        )
    for i, s in enumerate(value.stop):
        if not 1 <= len(s) <= MAX_STOP_CHARS:
            raise InvalidArgument(
                f"options.stop[{i}] must be 1 to {MAX_STOP_CHARS} characters long, got {len(s)}",
                field=f"options.stop[{i}]",
            )
    return GenerationOptions(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(value.stop),
        seed=value.seed if value.HasField("seed") else None,
        json_schema=json_schema(value.json_schema),
    )


def json_schema(text: str, field: str = "options.json_schema") -> dict[str, Any] | None:
    if not text:
        return None
    if len(text) > MAX_JSON_SCHEMA_CHARS:
        raise InvalidArgument(
            f"{field} is {len(text)} characters long; the limit is {MAX_JSON_SCHEMA_CHARS}",
            field=field,
        )
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{field} is not JSON: {exc}", field=field) from None
    except RecursionError:
        raise InvalidArgument(f"{field} is nested too deeply", field=field) from None
    if not isinstance(schema, dict):
        raise InvalidArgument(f"{field} must be a JSON Schema object", field=field)
    total = _bounds(schema)
    if total > MAX_JSON_SCHEMA_BOUNDS:
        raise InvalidArgument(
            f"{field}: its length and count bounds (minLength, maxLength, minItems, maxItems, "
            f"minProperties, maxProperties, and {{m,n}} in patterns) add up to {total}; the "
            f"limit is {MAX_JSON_SCHEMA_BOUNDS}",
            field=field,
        )
    return schema


def _bounds(schema: dict[str, Any]) -> int:
    """The sum of the length and count bounds anywhere in a schema (values that are not whole
    numbers are left to the schema's consumers). Iterative: a schema may nest deeply."""
    total = 0
    stack: list[dict[str, Any] | list[Any]] = [schema]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if key in _BOUND_KEYS and isinstance(value, int) and not isinstance(value, bool):
                total += max(value, 0)
            elif key == "pattern" and isinstance(value, str):
                total += sum(
                    int(low) + int(high or 0) for low, high in _PATTERN_BOUND.findall(value)
                )
            elif isinstance(value, dict | list):
                stack.append(value)
    return total


def labels(values: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument(
            f"{field} has {len(values)} entries; the limit is {MAX_LABELS}", field=field
        )
    for key, value in values.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"{field} key {key!r} must be 1 to 64 characters of a-z, 0-9 and _", field=field
            )
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument(
                f"{field}[{key}] is {len(value)} characters long; the limit is "
                f"{MAX_LABEL_VALUE_CHARS}",
                field=f"{field}[{key}]",
            )
    return dict(values)


def reason_call(request: reasoning_pb2.ReasonRequest, settings: ReasoningSettings) -> ReasonCall:
    strategy = validation.enum_value(
        request.strategy, "strategy", _STRATEGIES, reasoning_pb2.Strategy
    )
    samples = request.samples or settings.self_consistency_samples
    validation.int_range(samples, "samples", low=2, high=MAX_SAMPLES)
    draft = request.draft
    if len(draft) > MAX_DRAFT_CHARS:
        raise InvalidArgument(
            f"draft is {len(draft)} characters long; the limit is {MAX_DRAFT_CHARS}", field="draft"
        )
    if strategy == strategies.VERIFY and not draft.strip():
        raise InvalidArgument("draft is required with STRATEGY_VERIFY", field="draft")
    if request.options.json_schema and strategy != strategies.DIRECT:
        raise InvalidArgument(
            "options.json_schema is for STRATEGY_DIRECT: other strategies add reasoning text "
            "around the answer",
            field="options.json_schema",
        )
    return ReasonCall(
        messages=messages(request.messages),
        context=context(request.context),
        strategy=strategy,
        options=options(request.options, settings),
        samples=samples,
        draft=draft,
        labels=labels(request.labels),
    )


def embed_texts(texts: Sequence[str]) -> list[str]:
    if not texts:
        raise InvalidArgument("texts is required: 1 to 256 texts", field="texts")
    if len(texts) > MAX_EMBED_TEXTS:
        raise InvalidArgument(
            f"texts has {len(texts)} items; the limit is {MAX_EMBED_TEXTS}", field="texts"
        )
    for i, t in enumerate(texts):
        if not 1 <= len(t) <= MAX_EMBED_CHARS:
            raise InvalidArgument(
                f"texts[{i}] must be 1 to {MAX_EMBED_CHARS} characters long, got {len(t)}",
                field=f"texts[{i}]",
            )
    return list(texts)
