"""The budget seam of workflow steps: a model_call or tool_call step (or compensation) reserves its
most from every budget that applies before it runs and settles with what it really used after
(docs/tasks.md, "Budgets and usage", "Workflow steps").

The budgets that apply: the tenant's, the run's own (scope `run`, the run id: what a task's budget
becomes once a run executes it) and the persona's of the task the run executes, if it has an
assignee. The reservation's key is `workflow-step:<Temporal workflow id>/<activity id>`, the same
for every attempt of the activity: a retried activity finds its first hold (or its settlement)
and never holds or charges twice. The budgets store lives in this process: called directly."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edrs_core import FailedPrecondition, NotFound, ResourceExhausted
from edrs_core.model_info import ModelInfoCache
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_task.budget_server import ApprovalWaits, start_approval_wait
from edrs_task.durable.steps import MODEL_CALL_MAX_TOKENS, StepRefused, model_call_messages
from edrs_task.store.budgets import NEEDS_APPROVAL, Call, PostgresBudgetStore

log = logging.getLogger("edrs.task.charges")

# The persona service's estimate of a prompt's tokens (edrs_persona.prompt), kept in step.
CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 8
REPLY_PRIMER = 4
MODEL_INFO_SECONDS = 60.0
# Step types that are model or tool calls: the ones budgets count.
CHARGED = ("model_call", "tool_call")


def step_key(workflow_id: str, activity_id: str) -> str:
    """The reservation key of one step activity (`step-<id>` or `compensate-<id>`) of one run
    attempt's workflow: every retry of the activity derives the same one."""
    return f"workflow-step:{workflow_id}/{activity_id}"


def estimate_messages(messages: Sequence[reasoning_pb2.ChatMessage]) -> int:
    return (
        sum(math.ceil(len(m.content) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD for m in messages)
        + REPLY_PRIMER
    )


@dataclass(frozen=True)
class Charge:
    """The most a step may use: held before it runs."""

    model: str = ""
    tokens: int = 0
    tool_calls: int = 0


class StepBudgets:
    def __init__(
        self,
        store: PostgresBudgetStore,
        waits: ApprovalWaits,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
    ) -> None:
        self.store = store
        self.waits = waits
        self.model_info = ModelInfoCache(reasoning, MODEL_INFO_SECONDS)

    async def charge(self, step_type: str, params: dict[str, Any]) -> Charge | None:
        """What the step may use at most; None for a step that is neither a model nor a tool
        call. A model call holds its prompt's estimate plus its `maxTokens` (at most the model's
        output limit), priced as the reasoning service's chat model."""
        if step_type == "tool_call":
            return Charge(tool_calls=1)
        if step_type != "model_call":
            return None
        info = await self.model_info.get()
        max_tokens = int(params.get("maxTokens", MODEL_CALL_MAX_TOKENS))
        if info.max_output_tokens:
            max_tokens = min(max_tokens, info.max_output_tokens)
        tokens = estimate_messages(model_call_messages(params)) + max_tokens
        return Charge(model=info.chat_model, tokens=tokens)

    async def reserve(self, client_id: str, key: str, run_id: str, charge: Charge) -> None:
        """Hold `charge` under `key`, or StepRefused naming the budget (and, for a budget that
        sends overruns for approval, the approval it asked: the step does not wait for it)."""
        persona_id = await self.store.run_persona(client_id, run_id)
        try:
            held = await self.store.reserve(
                client_id,
                Call(
                    key=key,
                    persona_id=persona_id,
                    run_id=run_id,
                    model=charge.model,
                    tokens=charge.tokens,
                    tool_calls=charge.tool_calls,
                ),
            )
        except ResourceExhausted as exc:
            raise StepRefused(f"over budget: {exc.message}") from None
        await start_approval_wait(self.waits, client_id, held)
        if held.status == NEEDS_APPROVAL:
            raise StepRefused(
                f"over budget {held.budget_id}: approval {held.approval_id} to run over it was "
                f"requested; retry the run once it is approved: {held.reason}"
            )

    async def settle(self, client_id: str, key: str, step_type: str, output: Any) -> None:
        """Count what the step used (a settled key counts nothing more)."""
        if step_type == "model_call":
            await self.store.settle(
                client_id,
                key,
                prompt_tokens=int(output.get("promptTokens", 0)),
                completion_tokens=int(output.get("completionTokens", 0)),
                tool_calls=0,
                model=str(output.get("model", "")),
            )
        else:
            await self.store.settle(
                client_id, key, prompt_tokens=0, completion_tokens=0, tool_calls=1
            )

    async def release(self, client_id: str, key: str) -> None:
        """Release what `key` still holds (a step that failed for good); a key never reserved,
        refused or already settled is left as it is."""
        try:
            await self.store.settle(
                client_id, key, prompt_tokens=0, completion_tokens=0, tool_calls=0
            )
        except (NotFound, FailedPrecondition):
            return
