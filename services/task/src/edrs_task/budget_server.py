"""The budget gRPC servicer: budgets and their periods, reservations before a call and settlement
after, usage."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from edrs_core import InvalidArgument, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from edrs_task.budgets import PERIODS, Amount, time_zone_is_known
from edrs_task.durable.messages import APPROVAL_WAIT, ApprovalAsk
from edrs_task.store.budgets import (
    NEEDS_APPROVAL,
    PERSONA,
    RESERVED,
    RUN,
    SETTLED,
    TENANT,
    Budget,
    Call,
    PeriodUsage,
    PostgresBudgetStore,
    Reservation,
)
from edrs_task.store.workflows import Approval

log = logging.getLogger("edrs.task.budgets")

KEY_MAX, SCOPE_ID_MAX, MODEL_MAX = 200, 200, 200
USAGE_MAX_DAYS = 366

_SCOPES = {
    task_pb2.BUDGET_SCOPE_TENANT: TENANT,
    task_pb2.BUDGET_SCOPE_PERSONA: PERSONA,
    task_pb2.BUDGET_SCOPE_RUN: RUN,
}
_SCOPE_NUMBERS = {v: k for k, v in _SCOPES.items()}
_ON_EXCEED = {
    task_pb2.ON_EXCEED_UNSPECIFIED: "refuse",
    task_pb2.ON_EXCEED_REFUSE: "refuse",
    task_pb2.ON_EXCEED_APPROVAL: "approval",
}
_PERIODS = {
    task_pb2.BUDGET_PERIOD_UNSPECIFIED: "none",
    task_pb2.BUDGET_PERIOD_NONE: "none",
    task_pb2.BUDGET_PERIOD_DAY: "day",
    task_pb2.BUDGET_PERIOD_WEEK: "week",
    task_pb2.BUDGET_PERIOD_MONTH: "month",
}
_PERIOD_NUMBERS = {name: number for number, name in _PERIODS.items() if number}
assert set(_PERIOD_NUMBERS) == set(PERIODS)
_RESERVATION_STATUS = {
    RESERVED: task_pb2.RESERVATION_STATUS_RESERVED,
    SETTLED: task_pb2.RESERVATION_STATUS_SETTLED,
    NEEDS_APPROVAL: task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL,
}


def budget_to_proto(b: Budget) -> task_pb2.Budget:
    return task_pb2.Budget(
        id=str(b.id),
        scope=_SCOPE_NUMBERS[b.scope],
        scope_id=b.scope_id,
        max_tokens=b.caps.tokens,
        max_tool_calls=b.caps.tool_calls,
        max_cost_micros=b.caps.cost_micros,
        on_exceed=(
            task_pb2.ON_EXCEED_APPROVAL if b.on_exceed == "approval" else task_pb2.ON_EXCEED_REFUSE
        ),
        used_tokens=b.used.tokens,
        used_tool_calls=b.used.tool_calls,
        used_cost_micros=b.used.cost_micros,
        reserved_tokens=b.reserved.tokens,
        reserved_tool_calls=b.reserved.tool_calls,
        reserved_cost_micros=b.reserved.cost_micros,
        create_time=timestamp(b.created_at),
        update_time=timestamp(b.updated_at),
        period=_PERIOD_NUMBERS[b.period],
        time_zone=b.time_zone,
        period_start_time=timestamp(b.current.starts_at) if b.current.starts_at else None,
        period_end_time=timestamp(b.current.ends_at) if b.current.ends_at else None,
        granted_tokens=b.current.granted.tokens,
        granted_tool_calls=b.current.granted.tool_calls,
        granted_cost_micros=b.current.granted.cost_micros,
        approval_id=str(b.current.approval_id) if b.current.approval_id else "",
    )


def period_to_proto(p: PeriodUsage) -> task_pb2.BudgetPeriodUsage:
    return task_pb2.BudgetPeriodUsage(
        period=_PERIOD_NUMBERS[p.period],
        start_time=timestamp(p.starts_at) if p.starts_at else None,
        end_time=timestamp(p.ends_at) if p.ends_at else None,
        used_tokens=p.used.tokens,
        used_tool_calls=p.used.tool_calls,
        used_cost_micros=p.used.cost_micros,
        reserved_tokens=p.reserved.tokens,
        reserved_tool_calls=p.reserved.tool_calls,
        reserved_cost_micros=p.reserved.cost_micros,
        granted_tokens=p.granted.tokens,
        granted_tool_calls=p.granted.tool_calls,
        granted_cost_micros=p.granted.cost_micros,
        approval_id=str(p.approval_id) if p.approval_id else "",
        approval_rounds=p.approval_rounds,
    )


def reservation_to_proto(r: Reservation) -> task_pb2.Reservation:
    return task_pb2.Reservation(
        key=r.key,
        status=_RESERVATION_STATUS[r.status],
        tokens=r.amount.tokens,
        tool_calls=r.amount.tool_calls,
        cost_micros=r.amount.cost_micros,
        budget_id=r.budget_id,
        reason=r.reason,
        approval_id=r.approval_id,
    )


def _count(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
    return value


def _day(value: str, field: str, default: date) -> date:
    if not value.strip():
        return default
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidArgument(
            f"{field} must be a day YYYY-MM-DD, got {value!r}", field=field
        ) from None


def _optional_uuid_text(value: str, field: str) -> str:
    return str(parse_id(value.strip(), field)) if value.strip() else ""


class ApprovalWaits(Protocol):
    async def start(self, ask: ApprovalAsk) -> None:
        """Start the durable wait of an approval (its expiry); a repeated start is no error."""


class TemporalApprovalWaits:
    def __init__(self, temporal: Client, task_queue: str) -> None:
        self.temporal = temporal
        self.task_queue = task_queue

    async def start(self, ask: ApprovalAsk) -> None:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await self.temporal.start_workflow(
                APPROVAL_WAIT, ask, id=f"approval-{ask.approval_id}", task_queue=self.task_queue
            )


def _ask(client_id: str, approval: Approval) -> ApprovalAsk:
    return ApprovalAsk(
        client_id=client_id,
        approval_id=str(approval.id),
        idempotency_key=approval.idempotency_key,
        role=approval.role,
        title=approval.title,
        details=approval.details,
        on_expiry=approval.on_expiry,
        expires_at=approval.expires_at.isoformat(),
        requested_by=approval.requested_by,
    )


async def start_approval_wait(
    waits: ApprovalWaits, client_id: str, reservation: Reservation
) -> None:
    """Start the wait of the budget approval `reservation` asked for just now, if it did. The
    approval is committed; its wait (which expires it) starts now. Should the engine be
    unreachable, the approval is still decided as usual, and the next charge that finds it
    pending past its expiry expires it."""
    if reservation.asked is None:
        return
    try:
        await waits.start(_ask(client_id, reservation.asked))
    except Exception as exc:  # any engine failure: logged, not the call's
        log.warning("could not start the wait of budget approval %s: %s", reservation.asked.id, exc)


class BudgetServicer(task_pb2_grpc.BudgetServiceServicer):
    def __init__(self, store: PostgresBudgetStore, waits: ApprovalWaits) -> None:
        self.store = store
        self.waits = waits

    async def SetBudget(  # noqa: N802 (gRPC method name)
        self, request: task_pb2.SetBudgetRequest, context: ServicerContext
    ) -> task_pb2.Budget:
        client_id = require_client_id()
        scope = validation.enum_value(
            request.scope, "scope", {0: "", **_SCOPES}, task_pb2.BudgetScope
        )
        if not scope:
            raise InvalidArgument("scope is required: tenant, persona or run", field="scope")
        if scope == TENANT:
            if request.scope_id.strip():
                raise InvalidArgument(
                    "scope_id must be empty for the tenant scope", field="scope_id"
                )
            scope_id = ""
        elif scope == PERSONA:
            scope_id = str(parse_id(request.scope_id.strip(), "scope_id"))
        else:
            scope_id = validation.text(request.scope_id, "scope_id", max_length=SCOPE_ID_MAX)
        caps = Amount(
            tokens=_count(request.max_tokens, "max_tokens"),
            tool_calls=_count(request.max_tool_calls, "max_tool_calls"),
            cost_micros=_count(request.max_cost_micros, "max_cost_micros"),
        )
        on_exceed = validation.enum_value(
            request.on_exceed, "on_exceed", _ON_EXCEED, task_pb2.OnExceed
        )
        period = validation.enum_value(request.period, "period", _PERIODS, task_pb2.BudgetPeriod)
        time_zone = (
            validation.text(request.time_zone, "time_zone", max_length=100, required=False) or "UTC"
        )
        if not time_zone_is_known(time_zone):
            raise InvalidArgument(
                f"time_zone: {time_zone!r} is not an IANA time zone", field="time_zone"
            )
        return budget_to_proto(
            await self.store.set(client_id, scope, scope_id, caps, on_exceed, period, time_zone)
        )

    async def ListBudgetPeriods(  # noqa: N802
        self, request: task_pb2.ListBudgetPeriodsRequest, context: ServicerContext
    ) -> task_pb2.ListBudgetPeriodsResponse:
        client_id = require_client_id()
        periods, token = await self.store.list_periods(
            client_id,
            parse_id(request.budget_id, "budget_id"),
            request.page.page_token,
            request.page.page_size,
        )
        return task_pb2.ListBudgetPeriodsResponse(
            periods=[period_to_proto(p) for p in periods],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def ListBudgets(  # noqa: N802
        self, request: task_pb2.ListBudgetsRequest, context: ServicerContext
    ) -> task_pb2.ListBudgetsResponse:
        client_id = require_client_id()
        budgets, token = await self.store.list_budgets(
            client_id, request.page.page_token, request.page.page_size
        )
        return task_pb2.ListBudgetsResponse(
            budgets=[budget_to_proto(b) for b in budgets],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def DeleteBudget(  # noqa: N802
        self, request: task_pb2.DeleteBudgetRequest, context: ServicerContext
    ) -> task_pb2.DeleteBudgetResponse:
        client_id = require_client_id()
        await self.store.delete(client_id, parse_id(request.id))
        return task_pb2.DeleteBudgetResponse()

    async def Reserve(  # noqa: N802
        self, request: task_pb2.ReserveRequest, context: ServicerContext
    ) -> task_pb2.Reservation:
        client_id = require_client_id()
        call = Call(
            key=validation.text(request.key, "key", max_length=KEY_MAX),
            persona_id=_optional_uuid_text(request.persona_id, "persona_id"),
            run_id=validation.text(
                request.run_id, "run_id", max_length=SCOPE_ID_MAX, required=False
            ),
            model=validation.text(request.model, "model", max_length=MODEL_MAX, required=False),
            tokens=_count(request.tokens, "tokens"),
            tool_calls=_count(request.tool_calls, "tool_calls"),
        )
        reservation = await self.store.reserve(client_id, call)
        await start_approval_wait(self.waits, client_id, reservation)
        return reservation_to_proto(reservation)

    async def Settle(  # noqa: N802
        self, request: task_pb2.SettleRequest, context: ServicerContext
    ) -> task_pb2.Reservation:
        client_id = require_client_id()
        settled = await self.store.settle(
            client_id,
            validation.text(request.key, "key", max_length=KEY_MAX),
            prompt_tokens=_count(request.prompt_tokens, "prompt_tokens"),
            completion_tokens=_count(request.completion_tokens, "completion_tokens"),
            tool_calls=_count(request.tool_calls, "tool_calls"),
            model=validation.text(request.model, "model", max_length=MODEL_MAX, required=False),
        )
        return reservation_to_proto(settled)

    async def QueryUsage(  # noqa: N802
        self, request: task_pb2.QueryUsageRequest, context: ServicerContext
    ) -> task_pb2.QueryUsageResponse:
        client_id = require_client_id()
        today = datetime.now(UTC).date()
        to_day = _day(request.to_day, "to_day", today)
        from_day = _day(request.from_day, "from_day", to_day - timedelta(days=29))
        if from_day > to_day:
            raise InvalidArgument("from_day must not be after to_day", field="from_day")
        if (to_day - from_day).days >= USAGE_MAX_DAYS:
            raise InvalidArgument(
                f"the range covers more than {USAGE_MAX_DAYS} days", field="from_day"
            )
        rows = await self.store.usage(
            client_id,
            from_day,
            to_day,
            persona_id=_optional_uuid_text(request.persona_id, "persona_id"),
            model=validation.text(request.model, "model", max_length=MODEL_MAX, required=False),
        )
        return task_pb2.QueryUsageResponse(
            rows=[
                task_pb2.UsageRow(
                    day=r.day.isoformat(),
                    persona_id=r.persona_id,
                    model=r.model,
                    calls=r.calls,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    tool_calls=r.tool_calls,
                    cost_micros=r.cost_micros,
                )
                for r in rows
            ]
        )
