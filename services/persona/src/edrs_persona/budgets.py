"""The budget seam of a turn: reserve the model call's most from the task service's budgets before
reasoning generates, settle with the real token counts after (docs/tasks.md, "Budgets and usage").

One seam, around the persona's call to ReasoningService.Reason: every model call made for a persona
turn passes here, with the persona and the model known, and the turn's message id is a natural
idempotency key. Without a task service address budgets are not enforced (a fleet always has one)."""

from __future__ import annotations

import logging
from uuid import UUID

from edrs_core import ResourceExhausted, ServiceError
from edrs_proto.reasoning.v1 import reasoning_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

log = logging.getLogger("edrs.persona.budgets")


class TurnBudgets:
    def __init__(self, budgets: task_pb2_grpc.BudgetServiceAsyncStub | None) -> None:
        self.budgets = budgets

    @staticmethod
    def key(message_id: UUID) -> str:
        return f"persona-turn:{message_id}"

    async def reserve(self, message_id: UUID, persona_id: UUID, model: str, tokens: int) -> None:
        """Hold `tokens` of `model` for the turn. ResourceExhausted (the task service's words)
        when a budget refuses; a budget that wants approval refuses too: a conversation cannot
        wait for a human."""
        if self.budgets is None:
            return
        held = await self.budgets.Reserve(
            task_pb2.ReserveRequest(
                key=self.key(message_id),
                persona_id=str(persona_id),
                model=model,
                tokens=tokens,
            )
        )
        if held.status == task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL:
            raise ResourceExhausted(
                f"the turn needs a budget approval first: {held.reason}", peer="task"
            )

    async def settle(self, message_id: UUID, result: reasoning_pb2.ReasonResult | None) -> None:
        """Count what the model used (nothing, when it failed: the hold is released). A failure
        here is logged, never the turn's: the reply is already the user's."""
        if self.budgets is None:
            return
        usage = result.usage if result is not None else reasoning_pb2.Usage()
        try:
            await self.budgets.Settle(
                task_pb2.SettleRequest(
                    key=self.key(message_id),
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    model=result.model if result is not None else "",
                )
            )
        except ServiceError as exc:
            log.warning("could not settle the turn's budget reservation: %s", exc.details)
