"""Budgets against real PostgreSQL: concurrent reservations never overshoot a cap, a retried key
counts once, settlement records usage by day, persona and model; and the BudgetService over gRPC
(validation, approval budgets, tenant isolation, the budget_exceeded event)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from typing import Any
from uuid import UUID

import asyncpg
import grpc
import pytest
from edrs_core import FailedPrecondition, NotFound, ResourceExhausted, testing
from edrs_core.context import request_context
from edrs_core.db import apply_migrations, ensure_database, load_migrations, open_database
from edrs_core.events import ServiceEvents
from edrs_events.outbox import install_outbox
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc, workflow_pb2, workflow_pb2_grpc
from edrs_task.budgets import Amount, PriceTable
from edrs_task.config import ModelPrice
from edrs_task.store.budgets import (
    NEEDS_APPROVAL,
    RESERVED,
    SETTLED,
    Call,
    PostgresBudgetStore,
)
from edrs_task.store.workflows import WorkflowStore
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
PRICES = PriceTable(
    {"big": ModelPrice(prompt_micros_per_1k=1_000, completion_micros_per_1k=3_000)},
    ModelPrice(),
    tool_call_micros=500,
)


@pytest.fixture(scope="module")
async def db(postgres_engine) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_database(
        postgres_engine.url("test_task_budgets"), files("edrs_task") / "migrations", pool_size=20
    )
    async with pool.acquire() as conn:
        await install_outbox(conn)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def store(db) -> PostgresBudgetStore:
    events = ServiceEvents("task")
    return PostgresBudgetStore(db, events, PRICES, WorkflowStore(db, events))


def _tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:12]}"


async def _reserve_all(store, tenant: str, calls: list[Call]) -> list[object]:
    with request_context(tenant, None):
        return await asyncio.gather(
            *(store.reserve(tenant, c) for c in calls), return_exceptions=True
        )


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cap=st.integers(min_value=1, max_value=5_000),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=1_000),
    retried=st.integers(min_value=0, max_value=50),
)
@example(cap=2_500, sizes=[7] * 1_000, retried=20)
async def test_concurrent_reservations_never_overshoot_and_a_retried_key_counts_once(
    store, cap, sizes, retried
) -> None:
    tenant = _tenant()
    budget = await store.set(tenant, "tenant", "", Amount(tokens=cap), "refuse")
    calls = [Call(key=f"k{i}", tokens=n) for i, n in enumerate(sizes)]
    # Retries of keys already in the batch, racing their first attempt.
    calls += calls[: min(retried, len(calls))]
    outcomes = await _reserve_all(store, tenant, calls)
    granted: dict[str, int] = {}
    for call, outcome in zip(calls, outcomes, strict=True):
        if isinstance(outcome, ResourceExhausted):
            continue
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.status == RESERVED
        granted[call.key] = outcome.amount.tokens
    after = await store.get(tenant, budget.id)
    assert after is not None
    # Every granted key is held once, however often it was asked for, and never past the cap.
    assert after.reserved.tokens == sum(granted.values()) <= cap
    # Refused only when it did not fit: holds only grow, so what was left when a call was refused
    # is at least what is left now.
    refused = [c.tokens for c, o in zip(calls, outcomes, strict=True) if isinstance(o, Exception)]
    assert all(n > cap - after.reserved.tokens for n in refused)


async def test_settle_releases_the_hold_counts_what_was_used_once_and_records_usage(
    store,
) -> None:
    tenant, persona = _tenant(), str(uuid.uuid4())
    tenant_budget = await store.set(tenant, "tenant", "", Amount(tokens=10_000), "refuse")
    persona_budget = await store.set(
        tenant, "persona", persona, Amount(tokens=1_000, cost_micros=5_000), "refuse"
    )
    with request_context(tenant, None):
        held = await store.reserve(
            tenant, Call(key="turn-1", persona_id=persona, model="big", tokens=800)
        )
        # 800 tokens at the dearer rate (3,000 per 1k), rounded up.
        assert (held.status, held.amount) == (RESERVED, Amount(tokens=800, cost_micros=2_400))
        reserved = await store.get(tenant, persona_budget.id)
        assert reserved is not None and reserved.reserved == held.amount
        settle = dict(prompt_tokens=300, completion_tokens=100, tool_calls=0)
        first = await store.settle(tenant, "turn-1", **settle)
        again = await store.settle(tenant, "turn-1", **settle)
    assert first == again
    assert (first.status, first.amount) == (SETTLED, Amount(tokens=400, cost_micros=600))
    for budget_id in (tenant_budget.id, persona_budget.id):
        b = await store.get(tenant, budget_id)
        assert b is not None
        assert (b.reserved, b.used) == (Amount(), Amount(tokens=400, cost_micros=600))
    [row] = await store.usage(tenant, _today(), _today())
    assert (row.persona_id, row.model, row.calls, row.prompt_tokens, row.completion_tokens) == (
        persona,
        "big",
        1,
        300,
        100,
    )
    assert row.cost_micros == 600
    assert await store.usage(tenant, _today(), _today(), model="other") == []
    assert await store.usage(_tenant(), _today(), _today()) == []


def _today() -> date:
    return datetime.now(UTC).date()


async def test_only_the_budgets_of_the_call_apply(store) -> None:
    tenant, ada, bob = _tenant(), str(uuid.uuid4()), str(uuid.uuid4())
    await store.set(tenant, "persona", ada, Amount(tool_calls=1), "refuse")
    with request_context(tenant, None):
        await store.reserve(tenant, Call(key="a1", persona_id=ada, tool_calls=1))
        with pytest.raises(
            ResourceExhausted, match=f"the persona {ada} budget .* has 0 tool_calls"
        ):
            await store.reserve(tenant, Call(key="a2", persona_id=ada, tool_calls=1))
        # Bob has no budget, and Ada's does not cap him; another tenant's budgets never apply.
        assert (await store.reserve(tenant, Call(key="b1", persona_id=bob, tool_calls=5))).status
        other = _tenant()
        with request_context(other, None):
            ok = await store.reserve(other, Call(key="a2", persona_id=ada, tool_calls=1))
        assert ok.status == RESERVED


# The service over gRPC.

TENANT_A_ID, TENANT_B_ID = f"tenant-a-{RUN}", f"tenant-b-{RUN}"
TENANT_A = testing.tenant_metadata(TENANT_A_ID)
TENANT_B = testing.tenant_metadata(TENANT_B_ID)


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[testing.RunningService]:
    import edrs_persona.app
    from edrs_task.app import definition

    persona_settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_budget_persona", redis_db=1
    )
    async with testing.running_service(edrs_persona.app.definition, **persona_settings) as persona:
        settings = testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database="test_task_budget_svc", redis_db=5
        )
        async with testing.running_service(
            definition,
            **settings,
            peers={"persona": persona.grpc_address},
            temporal_address=temporal_engine.url(),
        ) as svc:
            yield svc


@pytest.fixture
def budgets(task) -> task_pb2_grpc.BudgetServiceStub:
    return task_pb2_grpc.BudgetServiceStub(task.channel)


async def test_an_approval_budget_asks_an_admin_once_and_the_approval_lets_calls_run(
    budgets, task, temporal_engine
) -> None:
    persona = str(uuid.uuid4())
    approvals = workflow_pb2_grpc.ApprovalServiceStub(task.channel)
    budget = await budgets.SetBudget(
        task_pb2.SetBudgetRequest(
            scope=task_pb2.BUDGET_SCOPE_PERSONA,
            scope_id=persona,
            max_tokens=100,
            on_exceed=task_pb2.ON_EXCEED_APPROVAL,
            period=task_pb2.BUDGET_PERIOD_MONTH,
            time_zone="Europe/Paris",
        ),
        metadata=TENANT_A,
    )
    assert (budget.period, budget.time_zone) == (task_pb2.BUDGET_PERIOD_MONTH, "Europe/Paris")
    assert budget.period_end_time.ToDatetime() > budget.period_start_time.ToDatetime()
    answers = [
        await budgets.Reserve(
            task_pb2.ReserveRequest(key=f"big-{RUN}-{i}", persona_id=persona, tokens=101),
            metadata=TENANT_A,
        )
        for i in range(2)
    ]
    assert {a.status for a in answers} == {task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL}
    approval_id = answers[0].approval_id
    assert approval_id and answers[1].approval_id == approval_id
    assert answers[0].budget_id == budget.id
    assert "has 100 tokens left; the call needs 101" in answers[0].reason
    assert f"approval {approval_id} was requested of the admin role" in answers[0].reason
    events = await testing.published_events(task, "task.budget_exceeded", budget.id)
    assert sorted(e["payload"]["key"] for e in events) == [f"big-{RUN}-0", f"big-{RUN}-1"]
    assert events[0]["payload"] | {"key": ""} == {
        "budget_id": budget.id,
        "scope": "persona",
        "scope_id": persona,
        "key": "",
        "resource": "tokens",
        "requested": 101,
        "available": 100,
        "action": "approval",
        "approval_id": approval_id,
    }
    # One approval for the period, waiting for an admin, as any other approval does.
    pending = await approvals.ListApprovals(
        workflow_pb2.ListApprovalsRequest(status=workflow_pb2.APPROVAL_STATUS_PENDING),
        metadata=TENANT_A,
    )
    mine = [a for a in pending.approvals if a.details["budget_id"] == budget.id]
    assert [a.id for a in mine] == [approval_id]
    assert mine[0].details["grant"]["tokens"] == 100  # one more cap for the month
    listed = await budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=TENANT_A)
    [held] = [b for b in listed.budgets if b.id == budget.id]
    assert (held.reserved_tokens, held.approval_id) == (0, approval_id)

    await approvals.DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=approval_id, approve=True, comment="go"),
        metadata=testing.tenant_metadata(TENANT_A_ID, role="admin"),
    )
    decided = await approvals.GetApproval(
        workflow_pb2.GetApprovalRequest(id=approval_id), metadata=TENANT_A
    )
    assert decided.status == workflow_pb2.APPROVAL_STATUS_APPROVED
    # The durable wait started with the request (it would have expired it) heard the decision.
    temporal = await Client.connect(temporal_engine.url())
    waited = await asyncio.wait_for(
        temporal.get_workflow_handle(f"approval-{approval_id}").result(), 60
    )
    assert (waited["approval_id"], waited["status"]) == (approval_id, "approved")
    ok = await budgets.Reserve(
        task_pb2.ReserveRequest(key=f"big-{RUN}-0", persona_id=persona, tokens=101),
        metadata=TENANT_A,
    )
    assert ok.status == task_pb2.RESERVATION_STATUS_RESERVED
    [period] = (
        await budgets.ListBudgetPeriods(
            task_pb2.ListBudgetPeriodsRequest(budget_id=budget.id), metadata=TENANT_A
        )
    ).periods
    assert (period.reserved_tokens, period.granted_tokens, period.approval_id) == (
        101,
        100,
        approval_id,
    )
    await testing.expect_rpc_error(
        budgets.ListBudgetPeriods(
            task_pb2.ListBudgetPeriodsRequest(budget_id=budget.id), metadata=TENANT_B
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_refused_reservation_is_resource_exhausted(budgets) -> None:
    await budgets.SetBudget(
        task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_RUN, scope_id="r1", max_tokens=5),
        metadata=TENANT_A,
    )
    await testing.expect_rpc_error(
        budgets.Reserve(task_pb2.ReserveRequest(key="x", run_id="r1", tokens=6), metadata=TENANT_A),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the run r1 budget",
        "has 5 tokens left; the call needs 6",
    )


async def test_budgets_and_usage_are_the_tenants_own(budgets) -> None:
    made = await budgets.SetBudget(
        task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_TENANT, max_tokens=10_000),
        metadata=TENANT_A,
    )
    await budgets.Reserve(task_pb2.ReserveRequest(key="u1", tokens=10), metadata=TENANT_A)
    await budgets.Settle(
        task_pb2.SettleRequest(key="u1", prompt_tokens=3, completion_tokens=4), metadata=TENANT_A
    )
    theirs = await budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=TENANT_B)
    assert made.id not in {b.id for b in theirs.budgets}
    assert (await budgets.QueryUsage(task_pb2.QueryUsageRequest(), metadata=TENANT_B)).rows == []
    mine = await budgets.QueryUsage(task_pb2.QueryUsageRequest(), metadata=TENANT_A)
    assert sum(r.prompt_tokens + r.completion_tokens for r in mine.rows) >= 7
    for call in (
        budgets.DeleteBudget(task_pb2.DeleteBudgetRequest(id=made.id), metadata=TENANT_B),
        budgets.Settle(task_pb2.SettleRequest(key="u1"), metadata=TENANT_B),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND)
    await budgets.DeleteBudget(task_pb2.DeleteBudgetRequest(id=made.id), metadata=TENANT_A)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (task_pb2.SetBudgetRequest(), "scope is required"),
        (
            task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_PERSONA, scope_id="ada"),
            "scope_id must be a UUID",
        ),
        (
            task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_TENANT, scope_id="x"),
            "scope_id must be empty for the tenant scope",
        ),
        (
            task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_TENANT, max_tokens=-1),
            "max_tokens must not be negative",
        ),
        (
            task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_TENANT, period=9),
            "period",
        ),
        (
            task_pb2.SetBudgetRequest(scope=task_pb2.BUDGET_SCOPE_TENANT, time_zone="Mars/Olympus"),
            "time_zone: 'Mars/Olympus' is not an IANA time zone",
        ),
    ],
)
async def test_invalid_budget_names_the_field(budgets, request_, message) -> None:
    await testing.expect_rpc_error(
        budgets.SetBudget(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (task_pb2.ReserveRequest(tokens=1), "key is required"),
        (task_pb2.ReserveRequest(key="k", tokens=-1), "tokens must not be negative"),
        (task_pb2.ReserveRequest(key="k", persona_id="ada"), "persona_id must be a UUID"),
    ],
)
async def test_invalid_reservation_names_the_field(budgets, request_, message) -> None:
    await testing.expect_rpc_error(
        budgets.Reserve(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_usage_range_is_checked(budgets) -> None:
    await testing.expect_rpc_error(
        budgets.QueryUsage(
            task_pb2.QueryUsageRequest(from_day="2026-02-01", to_day="2026-01-01"),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "from_day must not be after to_day",
    )
    await testing.expect_rpc_error(
        budgets.QueryUsage(task_pb2.QueryUsageRequest(from_day="yesterday"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "from_day must be a day YYYY-MM-DD",
    )


# Periods, approvals and the budget_exceeded event, on a clock the test moves.


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2030, 3, 9, 20, 0, tzinfo=UTC))


@pytest.fixture
def timed(db, clock) -> PostgresBudgetStore:
    events = ServiceEvents("task")
    return PostgresBudgetStore(db, events, PRICES, WorkflowStore(db, events), clock=clock)


async def _events(db, event_type: str, aggregate_id: object) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT body FROM edrs_outbox WHERE event_type = $1 AND aggregate_id = $2 "
        "ORDER BY position",
        event_type,
        str(aggregate_id),
    )
    return [json.loads(r["body"]) for r in rows]


async def test_a_daily_budget_starts_afresh_at_midnight_in_its_zone_and_keeps_its_history(
    timed, clock
) -> None:
    tenant = _tenant()
    # 20:00 UTC on 9 March 2030 is 15:00 in New York; its day ends at 05:00 UTC on the 10th.
    budget = await timed.set(
        tenant, "tenant", "", Amount(tokens=100), "refuse", "day", "America/New_York"
    )
    assert budget.current.ends_at == datetime(2030, 3, 10, 5, 0, tzinfo=UTC)
    with request_context(tenant, None):
        await timed.reserve(tenant, Call(key="d1", tokens=70))
        await timed.settle(tenant, "d1", prompt_tokens=60, completion_tokens=0, tool_calls=0)
        # Held before midnight, settled after: it counts in the day it was admitted in.
        await timed.reserve(tenant, Call(key="d2", tokens=40))
        with pytest.raises(ResourceExhausted, match="resets at 2030-03-10T05:00:00"):
            await timed.reserve(tenant, Call(key="d3", tokens=1))
        clock.now = datetime(2030, 3, 10, 5, 0, tzinfo=UTC)  # local midnight
        await timed.settle(tenant, "d2", prompt_tokens=35, completion_tokens=0, tool_calls=0)
        fresh = await timed.reserve(tenant, Call(key="d4", tokens=100))
        assert fresh.status == RESERVED
        # The service was down for three days: no reset was missed, none is owed.
        clock.now = datetime(2030, 3, 13, 12, 0, tzinfo=UTC)
        later = await timed.reserve(tenant, Call(key="d5", tokens=100))
        assert later.status == RESERVED
    now = await timed.get(tenant, budget.id)
    assert now is not None and (now.used, now.reserved) == (Amount(), Amount(tokens=100))
    periods, _ = await timed.list_periods(tenant, budget.id, "", 10)
    assert [(p.start, p.used.tokens, p.reserved.tokens) for p in periods] == [
        (date(2030, 3, 13), 0, 100),
        (date(2030, 3, 10), 0, 100),
        (date(2030, 3, 9), 95, 0),
    ]
    # The 10th, when clocks spring forward in New York, is 23 hours long.
    assert periods[1].ends_at - periods[1].starts_at == timedelta(hours=23)
    with pytest.raises(NotFound):
        await timed.list_periods(_tenant(), budget.id, "", 10)


async def test_an_approval_budget_asks_once_per_period_and_the_decision_holds(
    db, timed, clock
) -> None:
    tenant, persona = _tenant(), str(uuid.uuid4())
    approvals = timed.approvals
    budget = await timed.set(
        tenant, "persona", persona, Amount(tokens=100), "approval", "day", "UTC"
    )
    with request_context(tenant, None):
        await timed.reserve(tenant, Call(key="p1", persona_id=persona, tokens=90))
        first = await timed.reserve(tenant, Call(key="p2", persona_id=persona, tokens=20))
        second = await timed.reserve(tenant, Call(key="p3", persona_id=persona, tokens=20))
        again = await timed.reserve(tenant, Call(key="p2", persona_id=persona, tokens=20))
    assert first.status == second.status == again.status == NEEDS_APPROVAL
    assert first.approval_id and first.approval_id == second.approval_id == again.approval_id
    assert first.asked is not None and second.asked is None and again.asked is None
    assert f"approval {first.approval_id} was requested of the admin role" in first.reason
    assert "the period may use 100 tokens more" in first.reason
    assert f"waiting for approval {first.approval_id}" in second.reason
    asked = await approvals.get_approval(tenant, UUID(first.approval_id))
    assert asked is not None and asked.status == "pending" and asked.role == "admin"
    assert asked.details["grant"] == {"tokens": 100, "tool_calls": 0, "cost_micros": 0}
    assert asked.expires_at == datetime(2030, 3, 10, tzinfo=UTC)  # the period's end
    # One request, one event per refused key (a retried key announces nothing more).
    assert len(await _events(db, "task.approval_requested", first.approval_id)) == 1
    exceeded = await _events(db, "task.budget_exceeded", budget.id)
    assert sorted(e["payload"]["key"] for e in exceeded) == ["p2", "p3"]
    assert {e["payload"]["approval_id"] for e in exceeded} == {first.approval_id}

    await approvals.decide_approval(tenant, asked.id, "approved", "user:boss", "fine")
    with request_context(tenant, None):
        # The key asked again is admitted, and so is a new call, up to the grant.
        assert (await timed.reserve(tenant, Call(key="p2", persona_id=persona))).status == RESERVED
        ok = await timed.reserve(tenant, Call(key="p4", persona_id=persona, tokens=80))
        assert ok.status == RESERVED
        # 90 + 20 + 80 of 200: the grant is spent; the next overrun asks again (round 2).
        over = await timed.reserve(tenant, Call(key="p5", persona_id=persona, tokens=20))
    assert over.status == NEEDS_APPROVAL and over.approval_id != first.approval_id
    b = await timed.get(tenant, budget.id)
    assert b is not None and b.current.granted == Amount(tokens=100)
    assert b.current.approval_rounds == 2

    await approvals.decide_approval(tenant, UUID(over.approval_id), "rejected", "user:boss", "no")
    with request_context(tenant, None):
        with pytest.raises(
            ResourceExhausted,
            match=f"approval {over.approval_id} to run over it was rejected by user:boss \\(no\\)",
        ):
            await timed.reserve(tenant, Call(key="p6", persona_id=persona, tokens=20))
        b = await timed.get(tenant, budget.id)
        assert b is not None and b.current.approval_rounds == 2  # no new request
        # The next day starts afresh, with no approval and its own cap.
        clock.now += timedelta(days=1)
        assert (
            await timed.reserve(tenant, Call(key="p7", persona_id=persona, tokens=100))
        ).status == RESERVED


async def test_an_unanswered_approval_expires_at_the_next_charge_and_is_asked_again(
    timed, clock
) -> None:
    tenant = _tenant()
    await timed.set(tenant, "tenant", "", Amount(tool_calls=1), "approval", "none", "UTC")
    with request_context(tenant, None):
        await timed.reserve(tenant, Call(key="t1", tool_calls=1))
        first = await timed.reserve(tenant, Call(key="t2", tool_calls=1))
        # Its wait never ran (no workflow engine here): a day later it is expired all the same.
        clock.now += timedelta(days=1, seconds=1)
        second = await timed.reserve(tenant, Call(key="t3", tool_calls=1))
    assert first.status == second.status == NEEDS_APPROVAL
    assert second.approval_id != first.approval_id
    expired = await timed.approvals.get_approval(tenant, UUID(first.approval_id))
    assert expired is not None and expired.status == "expired"


async def test_the_exceeded_event_is_written_in_the_refusals_transaction(db, timed) -> None:
    tenant = _tenant()
    budget = await timed.set(tenant, "tenant", "", Amount(tokens=5), "refuse")
    key = f"boom-{uuid.uuid4().hex[:8]}"
    # A real failure of the database after the event was written, before the charge commits.
    async with db.acquire() as conn:
        await conn.execute(
            f"""CREATE FUNCTION fail_{key.replace("-", "_")}() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'the disk is full'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER fail_{key.replace("-", "_")} BEFORE UPDATE ON budget_reservations
            FOR EACH ROW WHEN (NEW.key = '{key}' AND NEW.status = 'refused')
            EXECUTE FUNCTION fail_{key.replace("-", "_")}();"""
        )
    try:
        with request_context(tenant, None), pytest.raises(asyncpg.RaiseError, match="disk"):
            await timed.reserve(tenant, Call(key=key, tokens=6))
        assert await _events(db, "task.budget_exceeded", budget.id) == []
        assert (
            await db.fetchval(
                "SELECT count(*) FROM budget_reservations WHERE client_id = $1", tenant
            )
            == 0
        )
    finally:
        async with db.acquire() as conn:
            await conn.execute(
                f"DROP TRIGGER fail_{key.replace('-', '_')} ON budget_reservations;"
                f"DROP FUNCTION fail_{key.replace('-', '_')}();"
            )
    with request_context(tenant, None):
        for _ in range(2):  # the refusal, then its retry
            with pytest.raises(ResourceExhausted, match="has 5 tokens left"):
                await timed.reserve(tenant, Call(key=key, tokens=6))
    [event] = await _events(db, "task.budget_exceeded", budget.id)
    assert (event["payload"]["key"], event["payload"]["action"]) == (key, "refused")
    with pytest.raises(FailedPrecondition, match="was refused, so nothing is held"):
        await timed.settle(tenant, key, prompt_tokens=1, completion_tokens=0, tool_calls=0)


async def test_the_upgrade_keeps_what_budgets_used_and_hold(postgres_engine) -> None:
    """A database at 0004 with a budget in use: after 0005 its totals are its 'none' period, and
    a reservation held before the upgrade settles into it."""
    url = postgres_engine.url(f"test_task_budget_upgrade_{RUN}")
    await ensure_database(url)
    migrations = sorted(load_migrations(files("edrs_task") / "migrations"), key=lambda m: m.version)
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn, [m for m in migrations if m.version <= 4])
        budget_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO budgets (id, client_id, scope, max_tokens, used_tokens,
                reserved_tokens) VALUES ($1, 'acme', 'tenant', 1000, 300, 50)""",
            budget_id,
        )
        await conn.execute(
            """INSERT INTO budget_reservations (client_id, key, status, tokens, tool_calls,
                cost_micros, budget_ids) VALUES ('acme', 'old', 'reserved', 50, 0, 0, $1)""",
            [budget_id],
        )
        await apply_migrations(conn, migrations)
    finally:
        await conn.close()
    pool = await open_database(url, files("edrs_task") / "migrations", pool_size=2)
    try:
        events = ServiceEvents("task")
        async with pool.acquire() as c:
            await install_outbox(c)
        upgraded = PostgresBudgetStore(pool, events, PRICES, WorkflowStore(pool, events))
        before = await upgraded.get("acme", budget_id)
        assert before is not None and before.period == "none"
        assert (before.used.tokens, before.reserved.tokens) == (300, 50)
        with request_context("acme", None):
            await upgraded.settle(
                "acme", "old", prompt_tokens=40, completion_tokens=0, tool_calls=0
            )
        after = await upgraded.get("acme", budget_id)
        assert after is not None and (after.used.tokens, after.reserved.tokens) == (340, 0)
    finally:
        await pool.close()


async def test_no_approval_is_asked_for_a_call_another_budget_refuses(timed) -> None:
    tenant, persona = _tenant(), str(uuid.uuid4())
    await timed.set(tenant, "tenant", "", Amount(tokens=50), "refuse")
    asking = await timed.set(tenant, "persona", persona, Amount(tokens=10), "approval")
    with (
        request_context(tenant, None),
        pytest.raises(ResourceExhausted, match=r"the tenant budget .* has 50 tokens left"),
    ):
        await timed.reserve(tenant, Call(key="both", persona_id=persona, tokens=60))
    after = await timed.get(tenant, asking.id)
    assert after is not None and after.current.approval_id is None


async def test_a_new_time_zone_moves_the_current_periods_bounds_and_keeps_its_counts(
    timed,
) -> None:
    tenant = _tenant()
    await timed.set(tenant, "tenant", "", Amount(tokens=100), "refuse", "day", "UTC")
    with request_context(tenant, None):
        await timed.reserve(tenant, Call(key="z1", tokens=70))
        # 20:00 UTC on 9 March is noon the same day in Los Angeles: the same local day.
        moved = await timed.set(
            tenant, "tenant", "", Amount(tokens=100), "refuse", "day", "America/Los_Angeles"
        )
        assert moved.reserved == Amount(tokens=70)
        assert moved.current.ends_at == datetime(2030, 3, 10, 8, tzinfo=UTC)
        with pytest.raises(ResourceExhausted, match=r"resets at 2030-03-10T08:00:00\+00:00"):
            await timed.reserve(tenant, Call(key="z2", tokens=40))
