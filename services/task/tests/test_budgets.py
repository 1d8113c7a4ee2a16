"""Budgets against real PostgreSQL: concurrent reservations never overshoot a cap, a retried key
counts once, settlement records usage by day, persona and model; and the BudgetService over gRPC
(validation, approval budgets, tenant isolation, the budget_exceeded event)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from importlib.resources import files

import asyncpg
import grpc
import pytest
from edrs_core import ResourceExhausted, testing
from edrs_core.context import request_context
from edrs_core.db import open_database
from edrs_core.events import ServiceEvents
from edrs_events.outbox import install_outbox
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from edrs_task.budgets import Amount, PriceTable
from edrs_task.config import ModelPrice
from edrs_task.store.budgets import RESERVED, SETTLED, Call, PostgresBudgetStore
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
    return PostgresBudgetStore(db, ServiceEvents("task"), PRICES)


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


async def test_an_approval_budget_answers_needs_approval_and_announces_it(budgets, task) -> None:
    persona = str(uuid.uuid4())
    budget = await budgets.SetBudget(
        task_pb2.SetBudgetRequest(
            scope=task_pb2.BUDGET_SCOPE_PERSONA,
            scope_id=persona,
            max_tokens=100,
            on_exceed=task_pb2.ON_EXCEED_APPROVAL,
        ),
        metadata=TENANT_A,
    )
    answer = await budgets.Reserve(
        task_pb2.ReserveRequest(key=f"big-{RUN}", persona_id=persona, tokens=101),
        metadata=TENANT_A,
    )
    assert answer.status == task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL
    assert answer.budget_id == budget.id
    assert "has 100 tokens left; the call needs 101" in answer.reason
    [event] = await testing.published_events(task, "task.budget_exceeded", budget.id)
    assert event["payload"] == {
        "budget_id": budget.id,
        "scope": "persona",
        "scope_id": persona,
        "key": f"big-{RUN}",
        "resource": "tokens",
        "requested": 101,
        "available": 100,
        "action": "approval",
    }
    # Nothing was held.
    listed = await budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=TENANT_A)
    [mine] = [b for b in listed.budgets if b.id == budget.id]
    assert mine.reserved_tokens == 0


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
