"""The budget seam of a turn as logic (the task service's answers given by a recording stand-in;
test_task_turns.py runs it against the real task service): each call is reserved under its own
key before it runs and settled after with what it used, released when it failed, and a budget
asking for approval refuses the call naming the approval."""

from __future__ import annotations

from uuid import UUID

import pytest
from edrs_core import ResourceExhausted
from edrs_persona.budgets import TurnBudgets
from edrs_proto.reasoning.v1 import reasoning_pb2
from edrs_proto.task.v1 import task_pb2

MESSAGE, PERSONA = UUID(int=7), UUID(int=9)


class Recorded:
    def __init__(self, status: int = task_pb2.RESERVATION_STATUS_RESERVED) -> None:
        self.status = status
        self.calls: list[tuple[str, object]] = []

    async def Reserve(self, request):  # noqa: N802
        self.calls.append(("reserve", request))
        return task_pb2.Reservation(
            key=request.key, status=self.status, reason="over", budget_id="b1", approval_id="a1"
        )

    async def Settle(self, request):  # noqa: N802
        self.calls.append(("settle", request))
        return task_pb2.Reservation(key=request.key)


async def test_a_model_call_is_reserved_then_settled_with_its_usage() -> None:
    stub = Recorded()
    budgets = TurnBudgets(stub)  # type: ignore[arg-type]
    key = budgets.key(MESSAGE, "decide:1")
    async with budgets.spend(key, PERSONA, model="m", tokens=300) as spent:
        spent.result = reasoning_pb2.ReasonResult(
            model="m", usage=reasoning_pb2.Usage(prompt_tokens=120, completion_tokens=30)
        )
    [(first, reserve), (second, settle)] = stub.calls
    assert (first, reserve.key, reserve.persona_id, reserve.model, reserve.tokens) == (
        "reserve",
        f"persona-turn:{MESSAGE}:decide:1",
        str(PERSONA),
        "m",
        300,
    )
    assert (second, settle.key, settle.prompt_tokens, settle.completion_tokens) == (
        "settle",
        key,
        120,
        30,
    )


async def test_a_failed_tool_call_releases_its_hold() -> None:
    stub = Recorded()
    budgets = TurnBudgets(stub)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        async with budgets.spend(budgets.key(MESSAGE, "tool:call-1"), PERSONA, tool_calls=1):
            raise RuntimeError("the tool failed")
    [(_, reserve), (_, settle)] = stub.calls
    assert reserve.tool_calls == 1
    assert (settle.tool_calls, settle.prompt_tokens, settle.completion_tokens) == (0, 0, 0)


async def test_a_budget_wanting_approval_refuses_the_call_naming_the_approval() -> None:
    stub = Recorded(task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL)
    budgets = TurnBudgets(stub)  # type: ignore[arg-type]
    ran = False
    with pytest.raises(
        ResourceExhausted,
        match="over budget b1 and waits for approval a1; ask again once it is approved: over",
    ):
        async with budgets.spend(budgets.key(MESSAGE), PERSONA, tokens=10):
            ran = True
    assert not ran
    assert [kind for kind, _ in stub.calls] == ["reserve"]


async def test_without_a_task_service_nothing_is_asked() -> None:
    async with TurnBudgets(None).spend("k", PERSONA, tokens=10) as spent:
        spent.tool_calls = 1
