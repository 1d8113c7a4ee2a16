"""`/api/v1/budgets` and `/api/v1/usage`: what the tenant may spend (per period, with approved
overruns) and what it spent, by period and by day (docs/tasks.md, "Budgets and usage"), served by
the task service."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, model_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import JSON_INT_MAX, SINGLE_LINE, ApiModel, IsoDate, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(tags=["budgets"])

read_budgets = require(Permission.BUDGETS_READ)
write_budgets = require(Permission.BUDGETS_WRITE)
read_usage = require(Permission.USAGE_READ)

Scope = Literal["tenant", "persona", "run"]
OnExceed = Literal["refuse", "approval"]
BudgetPeriod = Literal["none", "day", "week", "month"]
_SCOPE: dict[Scope, task_pb2.BudgetScope.ValueType] = {
    "tenant": task_pb2.BUDGET_SCOPE_TENANT,
    "persona": task_pb2.BUDGET_SCOPE_PERSONA,
    "run": task_pb2.BUDGET_SCOPE_RUN,
}
_SCOPE_NAME = {number: name for name, number in _SCOPE.items()}
_ON_EXCEED: dict[OnExceed, task_pb2.OnExceed.ValueType] = {
    "refuse": task_pb2.ON_EXCEED_REFUSE,
    "approval": task_pb2.ON_EXCEED_APPROVAL,
}
_ON_EXCEED_NAME = {number: name for name, number in _ON_EXCEED.items()}
_PERIOD: dict[BudgetPeriod, task_pb2.BudgetPeriod.ValueType] = {
    "none": task_pb2.BUDGET_PERIOD_NONE,
    "day": task_pb2.BUDGET_PERIOD_DAY,
    "week": task_pb2.BUDGET_PERIOD_WEEK,
    "month": task_pb2.BUDGET_PERIOD_MONTH,
}
_PERIOD_NAME = {number: name for name, number in _PERIOD.items()}


class SetBudget(ApiModel):
    """Creates or replaces the budget of one scope; what was used so far is kept."""

    scope: Scope
    scope_id: str = Field(
        default="",
        max_length=200,
        pattern=SINGLE_LINE,
        description="Empty for `tenant`; a persona id for `persona`; a run id for `run`",
    )
    max_tokens: int = Field(default=0, ge=0, le=JSON_INT_MAX, description="0: no cap")
    max_tool_calls: int = Field(default=0, ge=0, le=JSON_INT_MAX, description="0: no cap")
    max_cost_micros: int = Field(
        default=0, ge=0, le=JSON_INT_MAX, description="Millionths of a US dollar; 0: no cap"
    )
    on_exceed: OnExceed = Field(
        default="refuse",
        description="A call that would exceed: refused, or refused while an approval is asked "
        "(one per budget and period); once approved, the period's caps grow by its grant",
    )
    period: BudgetPeriod = Field(
        default="none",
        description="How often the budget starts afresh, at midnight in `timeZone`: never, "
        "every day, every week (from Monday) or every month (from the 1st)",
    )
    time_zone: str = Field(
        default="UTC",
        max_length=100,
        pattern=SINGLE_LINE,
        description="IANA time zone of the period's midnight, e.g. `Europe/Paris`",
    )

    @model_validator(mode="after")
    def _scope_id_fits_the_scope(self) -> SetBudget:
        if self.scope == "tenant" and self.scope_id:
            raise ValueError("scopeId must be empty for the tenant scope")
        if self.scope != "tenant" and not self.scope_id:
            raise ValueError(f"scopeId is required for the {self.scope} scope")
        return self


class Amounts(ApiModel):
    tokens: int
    tool_calls: int
    cost_micros: int

    @classmethod
    def of(cls, message: Any, prefix: str) -> Amounts:
        """The ``{prefix}_tokens``, ``_tool_calls`` and ``_cost_micros`` fields of a message."""
        return cls(
            tokens=getattr(message, f"{prefix}_tokens"),
            tool_calls=getattr(message, f"{prefix}_tool_calls"),
            cost_micros=getattr(message, f"{prefix}_cost_micros"),
        )


class BudgetOut(ApiModel):
    id: UUID
    scope: Scope
    scope_id: str
    max_tokens: int
    max_tool_calls: int
    max_cost_micros: int
    on_exceed: OnExceed
    period: BudgetPeriod
    time_zone: str
    period_start: datetime | None = Field(
        description="When the current period began; null for a budget that never resets"
    )
    period_end: datetime | None = Field(
        description="When the current period ends (the next reset); null when it never resets"
    )
    used: Amounts = Field(description="Settled so far in the current period")
    reserved: Amounts = Field(description="Held in the current period by calls not yet settled")
    granted: Amounts = Field(
        description="Added to the caps in the current period by approved overruns"
    )
    approval_id: UUID | None = Field(
        description="The latest approval asked for an overrun of the current period"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, b: task_pb2.Budget) -> BudgetOut:
        return cls(
            id=UUID(b.id),
            scope=_SCOPE_NAME[b.scope],
            scope_id=b.scope_id,
            max_tokens=b.max_tokens,
            max_tool_calls=b.max_tool_calls,
            max_cost_micros=b.max_cost_micros,
            on_exceed=_ON_EXCEED_NAME.get(b.on_exceed, "refuse"),
            period=_PERIOD_NAME.get(b.period, "none"),
            time_zone=b.time_zone,
            period_start=_time(b.period_start_time) if b.HasField("period_start_time") else None,
            period_end=_time(b.period_end_time) if b.HasField("period_end_time") else None,
            used=Amounts.of(b, "used"),
            reserved=Amounts.of(b, "reserved"),
            granted=Amounts.of(b, "granted"),
            approval_id=UUID(b.approval_id) if b.approval_id else None,
            created_at=_time(b.create_time),
            updated_at=_time(b.update_time),
        )


class BudgetPeriodOut(ApiModel):
    period: BudgetPeriod
    start: datetime | None = Field(description="Null for a budget that never resets")
    end: datetime | None = Field(description="Null for a budget that never resets")
    used: Amounts
    reserved: Amounts
    granted: Amounts = Field(description="Added to the caps by approved overruns")
    approval_id: UUID | None = Field(
        description="The latest approval asked for an overrun of this period"
    )
    approval_rounds: int = Field(description="How many approvals were asked in this period")

    @classmethod
    def of(cls, p: task_pb2.BudgetPeriodUsage) -> BudgetPeriodOut:
        return cls(
            period=_PERIOD_NAME.get(p.period, "none"),
            start=_time(p.start_time) if p.HasField("start_time") else None,
            end=_time(p.end_time) if p.HasField("end_time") else None,
            used=Amounts.of(p, "used"),
            reserved=Amounts.of(p, "reserved"),
            granted=Amounts.of(p, "granted"),
            approval_id=UUID(p.approval_id) if p.approval_id else None,
            approval_rounds=p.approval_rounds,
        )


class BudgetPeriodPage(PageOf):
    periods: list[BudgetPeriodOut] = Field(description="Newest first")


class BudgetPage(PageOf):
    budgets: list[BudgetOut]


class UsageRowOut(ApiModel):
    day: date
    persona_id: str = Field(description="Empty for calls made for no persona")
    model: str = Field(description="Empty for tool calls")
    calls: int
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int
    cost_micros: int


class Usage(ApiModel):
    rows: list[UsageRowOut] = Field(description="Newest day first, then persona, then model")


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def budget_stub(ctx: GatewayContext) -> task_pb2_grpc.BudgetServiceAsyncStub:
    return ctx.runtime.peers.stub(task_pb2_grpc.BudgetServiceStub)


_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}


@router.get(
    "/budgets",
    response_model=BudgetPage,
    summary="List budgets",
    description="The tenant's budgets with what each has used and holds, oldest first.",
    responses=_ERRORS,
)
async def list_budgets(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_budgets)],
) -> BudgetPage:
    request = task_pb2.ListBudgetsRequest()
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await budget_stub(ctx).ListBudgets(request)
    return BudgetPage(
        budgets=[BudgetOut.of(b) for b in reply.budgets],
        next_page_token=reply.page.next_page_token,
    )


@router.put(
    "/budgets",
    response_model=BudgetOut,
    summary="Set a budget",
    description="Creates or replaces the budget of one scope (the tenant, a persona, a run); "
    "what was used and is held so far is kept.",
    responses=_ERRORS,
)
async def set_budget(
    body: SetBudget, ctx: Ctx, caller: Annotated[Principal, Depends(write_budgets)]
) -> BudgetOut:
    budget = await budget_stub(ctx).SetBudget(
        task_pb2.SetBudgetRequest(
            scope=_SCOPE[body.scope],
            scope_id=body.scope_id,
            max_tokens=body.max_tokens,
            max_tool_calls=body.max_tool_calls,
            max_cost_micros=body.max_cost_micros,
            on_exceed=_ON_EXCEED[body.on_exceed],
            period=_PERIOD[body.period],
            time_zone=body.time_zone,
        )
    )
    return BudgetOut.of(budget)


@router.get(
    "/budgets/{budgetId}/periods",
    response_model=BudgetPeriodPage,
    summary="A budget's periods",
    description="What one budget used, held and was granted in each period that saw a charge, "
    "newest first (one period for a budget that never resets).",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_budget_periods(
    budget_id: Annotated[UUID, Path(alias="budgetId")],
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_budgets)],
) -> BudgetPeriodPage:
    request = task_pb2.ListBudgetPeriodsRequest(budget_id=str(budget_id))
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await budget_stub(ctx).ListBudgetPeriods(request)
    return BudgetPeriodPage(
        periods=[BudgetPeriodOut.of(p) for p in reply.periods],
        next_page_token=reply.page.next_page_token,
    )


@router.delete(
    "/budgets/{budgetId}",
    status_code=204,
    response_class=Response,
    summary="Delete a budget",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_budget(
    budget_id: Annotated[UUID, Path(alias="budgetId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_budgets)],
) -> Response:
    await budget_stub(ctx).DeleteBudget(task_pb2.DeleteBudgetRequest(id=str(budget_id)))
    return Response(status_code=204)


@router.get(
    "/usage",
    response_model=Usage,
    summary="Usage by day",
    description="What the tenant's model and tool calls used per UTC day, persona and model: "
    "calls, tokens, tool calls and money. Default range: the last 30 days; at most 366.",
    responses=_ERRORS,
)
async def usage(
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_usage)],
    from_day: Annotated[
        IsoDate | None, Query(alias="from", description="First day, YYYY-MM-DD")
    ] = None,
    to_day: Annotated[IsoDate | None, Query(alias="to", description="Last day, YYYY-MM-DD")] = None,
    persona_id: Annotated[UUID | None, Query(alias="personaId")] = None,
    model: Annotated[str | None, Query(max_length=200, pattern=SINGLE_LINE)] = None,
) -> Usage:
    reply = await budget_stub(ctx).QueryUsage(
        task_pb2.QueryUsageRequest(
            from_day=from_day.isoformat() if from_day else "",
            to_day=to_day.isoformat() if to_day else "",
            persona_id=str(persona_id) if persona_id else "",
            model=model or "",
        )
    )
    return Usage(
        rows=[
            UsageRowOut(
                day=date.fromisoformat(r.day),
                persona_id=r.persona_id,
                model=r.model,
                calls=r.calls,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                tool_calls=r.tool_calls,
                cost_micros=r.cost_micros,
            )
            for r in reply.rows
        ]
    )
