"""The model as the source of decomposition proposals: the reasoning service, asked for JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

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
        f"{json.dumps(_EXAMPLE)}. Each subtask has a short unique id, a title, a step_type "
        f"(one of {', '.join(STEP_TYPES)}), the skills it needs, and the ids of the subtasks it "
        "depends on (no cycles)."
    )


class ModelProposalSource:
    """Reason (DIRECT, low temperature) on the reasoning peer; the answer is the proposal."""

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
        options = reasoning_pb2.GenerationOptions(max_tokens=self.max_tokens, temperature=0.2)
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
