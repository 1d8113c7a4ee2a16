"""The model as the source of decomposition proposals: the reasoning service, asked for JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edrs_core import Unavailable
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_task.decomposition import STEP_TYPES

_EXAMPLE = {
    "subtasks": [
        {
            "id": "s1",
            "title": "Collect last quarter's sales figures",
            "step_type": "knowledge_search",
            "skills": ["research"],
            "depends_on": [],
        },
        {
            "id": "s2",
            "title": "Write the summary",
            "step_type": "model_call",
            "skills": ["writing"],
            "depends_on": ["s1"],
        },
    ]
}


def instructions(max_subtasks: int) -> str:
    return (
        "You plan work. Break the user's goal into at most "
        f"{max_subtasks} subtasks. Answer with one JSON object and nothing else, shaped like: "
        f"{json.dumps(_EXAMPLE)}. Each subtask has a short unique id (s1, s2, ...), a title, a "
        f"step_type (one of {', '.join(STEP_TYPES)}) and the skills it needs. depends_on lists "
        "only ids of subtasks that come BEFORE it in the list, never its own id: the first "
        "subtask's depends_on is []."
    )


def generation_schema(max_subtasks: int) -> dict[str, Any]:
    """The proposal's shape as a constraint on generation, such that what is generated is a DAG by
    construction: the k-th subtask's id is `s<k>` and it may depend only on `s1`..`s<k-1>` (one
    alternative per length, as llama.cpp turns a tuple into an exact length). The small local
    model otherwise makes its first subtask depend on itself, prompt or not. parse_proposal still
    checks everything: an OpenAI-compatible server may not enforce the schema.

    No string bounds: llama.cpp spells a string's maxLength as that many repetitions in its
    grammar, and a grammar of thousands crashed its sampler (a segfault of the reasoning service,
    seen with maxLength 2,000)."""

    def step(k: int) -> dict[str, Any]:
        earlier = [f"s{i}" for i in range(1, k)]
        depends_on: dict[str, Any] = (
            {"type": "array", "items": {"enum": earlier}} if earlier else {"const": []}
        )
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "title", "step_type", "skills", "depends_on"],
            "properties": {
                "id": {"const": f"s{k}"},
                "title": {"type": "string"},
                "step_type": {"enum": list(STEP_TYPES)},
                "skills": {"type": "array", "items": {"type": "string"}},
                "depends_on": depends_on,
            },
        }

    lengths = [
        {"type": "array", "prefixItems": [step(k) for k in range(1, n + 1)], "items": False}
        for n in range(1, max_subtasks + 1)
    ]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["subtasks"],
        "properties": {"subtasks": {"anyOf": lengths}},
    }


class ModelProposalSource:
    """Reason (DIRECT, greedy, the answer constrained to the proposal's JSON Schema) on the
    reasoning peer; the answer is the proposal. Constrained decoding guarantees the shape, not the
    sense: the proposal is validated again (dependencies, cycles) like any other."""

    def __init__(
        self,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        *,
        max_tokens: int,
        timeout: float,
    ) -> None:
        self.reasoning = reasoning
        self.max_tokens = max_tokens
        self.timeout = timeout

    async def propose(
        self, goal: str, max_subtasks: int, previous: str = "", problems: Sequence[str] = ()
    ) -> str:
        messages = [
            reasoning_pb2.ChatMessage(role="system", content=instructions(max_subtasks)),
            reasoning_pb2.ChatMessage(role="user", content=goal),
        ]
        if previous:
            messages += [
                reasoning_pb2.ChatMessage(role="assistant", content=previous),
                reasoning_pb2.ChatMessage(
                    role="user",
                    content="That proposal is invalid: "
                    + "; ".join(problems)
                    + ". Answer again with the corrected JSON object only.",
                ),
            ]
        options = reasoning_pb2.GenerationOptions(
            max_tokens=self.max_tokens,
            temperature=0.0,
            json_schema=json.dumps(generation_schema(max_subtasks)),
        )
        call = self.reasoning.Reason(
            reasoning_pb2.ReasonRequest(
                messages=messages,
                strategy=reasoning_pb2.STRATEGY_DIRECT,
                options=options,
                labels={"purpose": "decomposition"},
            ),
            timeout=self.timeout,
        )
        async for response in call:
            if response.HasField("result"):
                return response.result.answer
        raise Unavailable("the reasoning service ended the proposal without a result")
