"""The budget seam of a turn: every model call and tool call made for a persona turn reserves its
most from the task service's budgets before it runs and settles with what it really used after
(docs/tasks.md, "Budgets and usage").

One seam, around the persona's calls to ReasoningService.Reason (the answer, and each tool
decision) and ToolService.CallTool: the persona and the model are known there, and the turn's
message id makes each call's idempotency key (`persona-turn:<message id>[:<step>]`). Without a
task service address budgets are not enforced (a fleet always has one)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

from edrs_core import ResourceExhausted, ServiceError
from edrs_proto.reasoning.v1 import reasoning_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

log = logging.getLogger("edrs.persona.budgets")


@dataclass
class Spent:
    """What a call used, filled in by the caller inside `TurnBudgets.spend` (zeros: released)."""

    result: reasoning_pb2.ReasonResult | None = None
    tool_calls: int = 0
    models: list[str] = field(default_factory=list)


class TurnBudgets:
    def __init__(self, budgets: task_pb2_grpc.BudgetServiceAsyncStub | None) -> None:
        self.budgets = budgets

    @staticmethod
    def key(message_id: UUID, step: str = "") -> str:
        return f"persona-turn:{message_id}" + (f":{step}" if step else "")

    @asynccontextmanager
    async def spend(
        self,
        key: str,
        persona_id: UUID,
        *,
        model: str = "",
        tokens: int = 0,
        tool_calls: int = 0,
    ) -> AsyncIterator[Spent]:
        """Reserve before the block, settle after it with what the block recorded in the yielded
        `Spent` (nothing, when the block failed: the hold is released)."""
        await self.reserve(key, persona_id, model=model, tokens=tokens, tool_calls=tool_calls)
        spent = Spent()
        try:
            yield spent
        finally:
            await self.settle(key, spent)

    async def reserve(
        self, key: str, persona_id: UUID, *, model: str = "", tokens: int = 0, tool_calls: int = 0
    ) -> None:
        """ResourceExhausted (the task service's words) when a budget refuses. A budget that
        sends overruns for approval has asked an approver (one approval per budget and period,
        however many calls find it over); the turn does not wait for the human: it is refused
        naming that approval, and once the approval is granted the next turn runs within the
        grant (docs/tasks.md, "Over a budget")."""
        if self.budgets is None:
            return
        held = await self.budgets.Reserve(
            task_pb2.ReserveRequest(
                key=key,
                persona_id=str(persona_id),
                model=model,
                tokens=tokens,
                tool_calls=tool_calls,
            )
        )
        if held.status == task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL:
            raise ResourceExhausted(
                f"the call is over budget {held.budget_id} and waits for approval "
                f"{held.approval_id}; ask again once it is approved: {held.reason}",
                peer="task",
            )

    async def settle(self, key: str, spent: Spent) -> None:
        """Count what the call used. A failure here is logged, never the turn's: the call has
        already happened."""
        if self.budgets is None:
            return
        usage = spent.result.usage if spent.result is not None else reasoning_pb2.Usage()
        try:
            await self.budgets.Settle(
                task_pb2.SettleRequest(
                    key=key,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    tool_calls=spent.tool_calls,
                    model=spent.result.model if spent.result is not None else "",
                )
            )
        except ServiceError as exc:
            log.warning("could not settle budget reservation %s: %s", key, exc.details)
