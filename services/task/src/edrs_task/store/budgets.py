"""PostgreSQL adapter of budgets, their periods, reservations and usage.

Concurrency: a reservation locks every budget that applies (`SELECT ... FOR UPDATE`, in id order so
two reservations never wait on each other crosswise) and checks used + reserved + wanted against
each cap of the current period under that lock, so concurrent reservations are serialised per
budget and never overshoot.
Periods: the period a charge falls in is computed from the clock at the charge (docs/tasks.md,
"Periods"); its row is created by the first charge in it, so a reset needs no job.
Idempotency: the reservation row's primary key is (tenant, key); a retry finds the first one. A
refusal is recorded in that row in the same transaction as its task.budget_exceeded event (one
event per key; a crash loses or repeats neither)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import FailedPrecondition, NotFound, ResourceExhausted
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_task.budgets import (
    RESOURCES,
    Amount,
    Overrun,
    Period,
    PriceTable,
    allowance,
    current_period,
    grant,
    overrun,
)
from edrs_task.durable.messages import derived_id
from edrs_task.store import Limits
from edrs_task.store.workflows import Approval, WorkflowStore

TENANT, PERSONA, RUN = "tenant", "persona", "run"
RESERVED, SETTLED, NEEDS_APPROVAL, REFUSED = "reserved", "settled", "needs_approval", "refused"
# Who decides a budget's overrun: those who may set budgets.
APPROVER_ROLE = "admin"
# How long a budget approval waits at most (and never past the end of its period).
APPROVAL_SECONDS = 24 * 3600

_BUDGET_COLUMNS = (
    "id, scope, scope_id, max_tokens, max_tool_calls, max_cost_micros, on_exceed, period, "
    "time_zone, created_at, updated_at"
)
_PERIOD_COLUMNS = (
    "id, budget_id, period, period_start, starts_at, ends_at, used_tokens, used_tool_calls, "
    "used_cost_micros, reserved_tokens, reserved_tool_calls, reserved_cost_micros, "
    "granted_tokens, granted_tool_calls, granted_cost_micros, approval_id, approval_rounds, "
    "granted_approval_id, created_at"
)


@dataclass(frozen=True, kw_only=True)
class PeriodUsage:
    """What a budget used, holds and was granted in one period (zeros for one not charged yet)."""

    id: UUID | None
    period: str
    start: date
    starts_at: datetime | None
    ends_at: datetime | None
    used: Amount = field(default_factory=Amount)
    reserved: Amount = field(default_factory=Amount)
    granted: Amount = field(default_factory=Amount)
    approval_id: UUID | None = None
    approval_rounds: int = 0
    granted_approval_id: UUID | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Budget:
    id: UUID
    scope: str
    scope_id: str
    caps: Amount
    on_exceed: str
    period: str
    time_zone: str
    current: PeriodUsage
    created_at: datetime
    updated_at: datetime

    @property
    def used(self) -> Amount:
        return self.current.used

    @property
    def reserved(self) -> Amount:
        return self.current.reserved

    def describe(self) -> str:
        return f"the {self.scope}" + (f" {self.scope_id}" if self.scope_id else "") + " budget"


@dataclass(frozen=True, kw_only=True)
class Reservation:
    key: str
    status: str
    amount: Amount
    budget_id: str = ""
    reason: str = ""
    approval_id: str = ""
    resource: str = ""
    # A budget approval this reservation asked for just now (its wait is to be started).
    asked: Approval | None = None


@dataclass(frozen=True, kw_only=True)
class Call:
    """A call about to run: who makes it, and the most it may use."""

    key: str
    persona_id: str = ""
    run_id: str = ""
    model: str = ""
    tokens: int = 0
    tool_calls: int = 0


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    day: date
    persona_id: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int
    cost_micros: int


@dataclass(frozen=True)
class _Refusal:
    budget: Budget
    status: str
    reason: str
    over: Overrun
    approval: Approval | None = None
    asked: bool = False


def _amount(row: Any, prefix: str) -> Amount:
    return Amount(
        tokens=row[f"{prefix}tokens"],
        tool_calls=row[f"{prefix}tool_calls"],
        cost_micros=row[f"{prefix}cost_micros"],
    )


def _period_usage(row: Any) -> PeriodUsage:
    return PeriodUsage(
        id=row["id"],
        period=row["period"],
        start=row["period_start"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        used=_amount(row, "used_"),
        reserved=_amount(row, "reserved_"),
        granted=_amount(row, "granted_"),
        approval_id=row["approval_id"],
        approval_rounds=row["approval_rounds"],
        granted_approval_id=row["granted_approval_id"],
        created_at=row["created_at"],
    )


def _empty(period: Period) -> PeriodUsage:
    return PeriodUsage(
        id=None,
        period=period.kind,
        start=period.start,
        starts_at=period.starts_at,
        ends_at=period.ends_at,
    )


def _budget(row: Any, current: PeriodUsage) -> Budget:
    return Budget(
        id=row["id"],
        scope=row["scope"],
        scope_id=row["scope_id"],
        caps=_amount(row, "max_"),
        on_exceed=row["on_exceed"],
        period=row["period"],
        time_zone=row["time_zone"],
        current=current,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _reservation(row: Any) -> Reservation:
    """A reserved one holds its estimate; a settled one reports what the call used."""
    if row["status"] == SETTLED:
        amount = Amount(
            tokens=row["settled_prompt_tokens"] + row["settled_completion_tokens"],
            tool_calls=row["settled_tool_calls"],
            cost_micros=row["settled_cost_micros"],
        )
    else:
        amount = _amount(row, "")
    return Reservation(key=row["key"], status=row["status"], amount=amount)


def _amount_text(amount: Amount) -> str:
    parts = [f"{amount.get(r)} {r}" for r in RESOURCES if amount.get(r)]
    return ", ".join(parts) or "nothing"


async def ensure_run_budget(conn: Any, client_id: str, run_id: str, limits: Limits) -> None:
    """The run budget a task's own budget becomes once a run executes it (kept if one exists)."""
    if not limits:
        return
    await conn.execute(
        """INSERT INTO budgets
            (id, client_id, scope, scope_id, max_tokens, max_tool_calls, max_cost_micros)
        VALUES ($1, $2, 'run', $3, $4, $5, $6)
        ON CONFLICT (client_id, scope, scope_id) DO NOTHING""",
        new_id(),
        client_id,
        run_id,
        limits.tokens,
        limits.tool_calls,
        limits.cost_micros,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class PostgresBudgetStore:
    def __init__(
        self,
        db: asyncpg.Pool,
        events: ServiceEvents,
        prices: PriceTable,
        approvals: WorkflowStore,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.events = events
        self.prices = prices
        self.approvals = approvals
        # The time source of periods, approvals' expiry and usage days; tests pass their own.
        self.clock = clock

    # -- budgets ----------------------------------------------------------------------------

    async def _with_current(self, conn: Any, client_id: str, rows: list[Any]) -> list[Budget]:
        """The budgets of `rows` with their current period's counters."""
        now = self.clock()
        periods = [current_period(r["period"], r["time_zone"], now) for r in rows]
        found = await conn.fetch(
            f"""SELECT {_PERIOD_COLUMNS} FROM budget_periods
            JOIN unnest($2::uuid[], $3::text[], $4::date[]) AS k(budget_id, period, period_start)
                USING (budget_id, period, period_start)
            WHERE client_id = $1""",
            client_id,
            [r["id"] for r in rows],
            [p.kind for p in periods],
            [p.start for p in periods],
        )
        by_budget = {f["budget_id"]: _period_usage(f) for f in found}
        return [
            _budget(
                r,
                # Bounds as of the budget's time zone now (a row keeps its own until charged).
                replace(by_budget[r["id"]], starts_at=p.starts_at, ends_at=p.ends_at)
                if r["id"] in by_budget
                else _empty(p),
            )
            for r, p in zip(rows, periods, strict=True)
        ]

    async def set(
        self,
        client_id: str,
        scope: str,
        scope_id: str,
        caps: Amount,
        on_exceed: str,
        period: str = "none",
        time_zone: str = "UTC",
    ) -> Budget:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(
                f"""INSERT INTO budgets
                    (id, client_id, scope, scope_id, max_tokens, max_tool_calls, max_cost_micros,
                     on_exceed, period, time_zone)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (client_id, scope, scope_id) DO UPDATE SET
                    max_tokens = EXCLUDED.max_tokens,
                    max_tool_calls = EXCLUDED.max_tool_calls,
                    max_cost_micros = EXCLUDED.max_cost_micros,
                    on_exceed = EXCLUDED.on_exceed,
                    period = EXCLUDED.period,
                    time_zone = EXCLUDED.time_zone,
                    updated_at = now()
                RETURNING {_BUDGET_COLUMNS}""",
                new_id(),
                client_id,
                scope,
                scope_id,
                caps.tokens,
                caps.tool_calls,
                caps.cost_micros,
                on_exceed,
                period,
                time_zone,
            )
            [budget] = await self._with_current(conn, client_id, [row])
        return budget

    async def get(self, client_id: str, budget_id: UUID) -> Budget | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE client_id = $1 AND id = $2",
                client_id,
                budget_id,
            )
            if row is None:
                return None
            [budget] = await self._with_current(conn, client_id, [row])
        return budget

    async def list_budgets(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Budget], str]:
        rows, token = await keyset_page(
            self.db,
            table="budgets",
            columns=_BUDGET_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        async with self.db.acquire() as conn:
            return await self._with_current(conn, client_id, rows), token

    async def list_periods(
        self, client_id: str, budget_id: UUID, page_token: str, page_size: int
    ) -> tuple[list[PeriodUsage], str]:
        """A budget's periods that saw a charge, newest first; NotFound for no such budget."""
        if await self.get(client_id, budget_id) is None:
            raise NotFound(f"budget {budget_id} not found")
        rows, token = await keyset_page(
            self.db,
            table="budget_periods",
            columns=_PERIOD_COLUMNS,
            where="client_id = $1 AND budget_id = $2",
            args=[client_id, budget_id],
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_period_usage(r) for r in rows], token

    async def delete(self, client_id: str, budget_id: UUID) -> None:
        deleted = await self.db.fetchval(
            "DELETE FROM budgets WHERE client_id = $1 AND id = $2 RETURNING id",
            client_id,
            budget_id,
        )
        if deleted is None:
            raise NotFound(f"budget {budget_id} not found")

    # -- reservations -----------------------------------------------------------------------

    async def run_persona(self, client_id: str, run_id: str) -> str:
        """The assignee of the task a workflow run executes ('' for none): the persona whose
        budget the run's calls are charged to."""
        persona = await self.db.fetchval(
            """SELECT assignee_persona_id FROM tasks
            WHERE client_id = $1 AND workflow_run_id = $2 AND assignee_persona_id IS NOT NULL
            ORDER BY created_at, id LIMIT 1""",
            client_id,
            run_id,
        )
        return str(persona) if persona is not None else ""

    async def reserve(self, client_id: str, call: Call) -> Reservation:
        """Hold `call`'s estimate in the current period of every budget that applies, or none of
        them. A refusal is recorded under the key; the key asked again is judged afresh (the
        budget may have been raised, an approval granted, a period begun)."""
        wanted = Amount(
            tokens=call.tokens,
            tool_calls=call.tool_calls,
            cost_micros=self.prices.estimate(call.model, call.tokens, call.tool_calls),
        )
        async with self.db.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO budget_reservations
                    (client_id, key, persona_id, run_id, model, status, tokens, tool_calls,
                     cost_micros)
                VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $7, $8)
                ON CONFLICT (client_id, key) DO NOTHING
                RETURNING key""",
                client_id,
                call.key,
                call.persona_id,
                call.run_id,
                call.model,
                wanted.tokens,
                wanted.tool_calls,
                wanted.cost_micros,
            )
            first = inserted is not None
            if not first:
                # A retry (or a concurrent twin, which waited on the key's index entry until
                # the first committed): a held or settled key is the answer as it is.
                row = await conn.fetchrow(
                    """SELECT * FROM budget_reservations WHERE client_id = $1 AND key = $2
                    FOR UPDATE""",
                    client_id,
                    call.key,
                )
                assert row is not None  # reservations are never deleted
                if row["status"] in (RESERVED, SETTLED):
                    return _reservation(row)
                # Refused before: judged again, as the call first asked.
                call = Call(
                    key=call.key,
                    persona_id=row["persona_id"],
                    run_id=row["run_id"],
                    model=row["model"],
                    tokens=row["tokens"],
                    tool_calls=row["tool_calls"],
                )
                wanted = _amount(row, "")
            answer = await self._hold(conn, client_id, call, wanted, announce=first)
        if answer.status == REFUSED:
            raise ResourceExhausted(answer.reason, field=answer.resource)
        return answer

    async def _hold(
        self, conn: Any, client_id: str, call: Call, wanted: Amount, *, announce: bool
    ) -> Reservation:
        rows = await conn.fetch(
            f"""SELECT {_BUDGET_COLUMNS} FROM budgets
            WHERE client_id = $1 AND (
                scope = 'tenant'
                OR (scope = 'persona' AND $2 <> '' AND scope_id = $2)
                OR (scope = 'run' AND $3 <> '' AND scope_id = $3))
            ORDER BY id FOR UPDATE""",
            client_id,
            call.persona_id,
            call.run_id,
        )
        now = self.clock()
        budgets = [_budget(r, await self._period_row(conn, client_id, r, now)) for r in rows]
        # Budgets that refuse first: no human is asked about a call another budget refuses.
        for i in sorted(range(len(budgets)), key=lambda i: budgets[i].on_exceed == "approval"):
            refusal, budgets[i] = await self._check(conn, client_id, budgets[i], wanted, now)
            if refusal is not None:
                return await self._refuse(conn, client_id, call, refusal, announce=announce)
        hold_ids = [b.current.id for b in budgets]
        await conn.execute(
            """UPDATE budget_periods SET reserved_tokens = reserved_tokens + $3,
                reserved_tool_calls = reserved_tool_calls + $4,
                reserved_cost_micros = reserved_cost_micros + $5, updated_at = now()
            WHERE client_id = $1 AND id = ANY($2::uuid[])""",
            client_id,
            hold_ids,
            wanted.tokens,
            wanted.tool_calls,
            wanted.cost_micros,
        )
        await conn.execute(
            """UPDATE budget_reservations SET status = 'reserved', budget_ids = $3,
                hold_ids = $4, refused_by = NULL, reason = '', approval_id = NULL
            WHERE client_id = $1 AND key = $2""",
            client_id,
            call.key,
            [b.id for b in budgets],
            hold_ids,
        )
        return Reservation(key=call.key, status=RESERVED, amount=wanted)

    async def _period_row(
        self, conn: Any, client_id: str, budget: Any, now: datetime
    ) -> PeriodUsage:
        """The budget's row of the period `now` falls in, locked; created by its first charge."""
        period = current_period(budget["period"], budget["time_zone"], now)
        # The budget's row is locked: no other charge creates this period's row meanwhile.
        row = await conn.fetchrow(
            f"""SELECT {_PERIOD_COLUMNS} FROM budget_periods
            WHERE client_id = $1 AND budget_id = $2 AND period = $3 AND period_start = $4
            FOR UPDATE""",
            client_id,
            budget["id"],
            period.kind,
            period.start,
        )
        if row is not None and (row["starts_at"], row["ends_at"]) != (
            period.starts_at,
            period.ends_at,
        ):
            # The budget's time zone changed within a period starting on the same local day:
            # the period keeps its counters and takes the new bounds.
            row = await conn.fetchrow(
                f"""UPDATE budget_periods SET starts_at = $2, ends_at = $3, updated_at = now()
                WHERE id = $1 RETURNING {_PERIOD_COLUMNS}""",
                row["id"],
                period.starts_at,
                period.ends_at,
            )
        if row is None:
            row = await conn.fetchrow(
                f"""INSERT INTO budget_periods (id, client_id, budget_id, period, period_start,
                    starts_at, ends_at, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_PERIOD_COLUMNS}""",
                new_id(),
                client_id,
                budget["id"],
                period.kind,
                period.start,
                period.starts_at,
                period.ends_at,
                now,
            )
        return _period_usage(row)

    async def _check(
        self, conn: Any, client_id: str, budget: Budget, wanted: Amount, now: datetime
    ) -> tuple[_Refusal | None, Budget]:
        """None when `wanted` fits the budget's period (an approved overrun's grant counted in);
        else why not. An approval budget asks a human once per period and round: a pending
        request refuses with its id, a rejected one refuses for the rest of the period, an
        approved one adds its grant, and one expired (or whose grant is spent) asks anew."""
        p = budget.current
        over = overrun(allowance(budget.caps, p.granted), p.used, p.reserved, wanted)
        if over is None:
            return None, budget
        left = f"{budget.describe()} {budget.id} has {max(over.available, 0)} {over.resource} left"
        needs = f"the call needs {over.requested}"
        if p.ends_at is not None:
            needs += f" (the {p.period} resets at {p.ends_at.isoformat()})"
        if budget.on_exceed != "approval":
            return _Refusal(budget, REFUSED, f"{left}; {needs}", over), budget
        approval = None
        if p.approval_id is not None:
            approval = await self.approvals.get_approval(client_id, p.approval_id, conn=conn)
        if approval is not None and approval.status == "pending" and approval.expires_at <= now:
            # Its wait may not have run (the workflow engine was down): expired all the same.
            approval = await self.approvals.expire_approval(client_id, approval.id, conn=conn)
        if approval is not None and approval.status == "approved":
            if p.granted_approval_id != approval.id:
                extra = Amount(**{r: int(approval.details["grant"][r]) for r in RESOURCES})
                p = _period_usage(
                    await conn.fetchrow(
                        f"""UPDATE budget_periods SET granted_tokens = granted_tokens + $2,
                            granted_tool_calls = granted_tool_calls + $3,
                            granted_cost_micros = granted_cost_micros + $4,
                            granted_approval_id = $5, updated_at = now()
                        WHERE id = $1 RETURNING {_PERIOD_COLUMNS}""",
                        p.id,
                        extra.tokens,
                        extra.tool_calls,
                        extra.cost_micros,
                        approval.id,
                    )
                )
                budget = replace(budget, current=p)
                over = overrun(allowance(budget.caps, p.granted), p.used, p.reserved, wanted)
                if over is None:
                    return None, budget
            # This approval's grant is spent: a further overrun asks again.
            approval = None
        if approval is not None and approval.status == "pending":
            return _Refusal(
                budget,
                NEEDS_APPROVAL,
                f"{left}; {needs}; waiting for approval {approval.id}, asked "
                f"{approval.created_at.isoformat()} of the {approval.role} role",
                over,
                approval,
            ), budget
        if approval is not None and approval.status == "rejected":
            by = f" by {approval.decided_by}" if approval.decided_by else ""
            why = f" ({approval.comment})" if approval.comment else ""
            until = (
                f"until the period ends at {p.ends_at.isoformat()}"
                if p.ends_at is not None
                else "until its caps are raised"
            )
            return _Refusal(
                budget,
                REFUSED,
                f"{left}; {needs}; approval {approval.id} to run over it was rejected{by}{why}: "
                f"calls over it are refused {until}",
                over,
                approval,
            ), budget
        asked = await self._ask(conn, client_id, budget, wanted, now)
        return _Refusal(
            budget,
            NEEDS_APPROVAL,
            f"{left}; {needs}; approval {asked.id} was requested of the {asked.role} role: once "
            f"approved, the period may use {_amount_text(Amount(**asked.details['grant']))} more",
            over,
            asked,
            asked=True,
        ), replace(budget, current=replace(p, approval_id=asked.id))

    async def _ask(
        self, conn: Any, client_id: str, budget: Budget, wanted: Amount, now: datetime
    ) -> Approval:
        """The approval of this period's next overrun round (one per budget, period and round:
        the budget's lock serialises the callers that find it over)."""
        p = budget.current
        extra = grant(budget.caps, p.granted, p.used, p.reserved, wanted)
        rounds = p.approval_rounds + 1
        key = f"budget:{budget.id}:{p.period}:{p.start.isoformat()}:{rounds}"
        approval_id = UUID(derived_id(client_id, "approval", key))
        expires_at = now + timedelta(seconds=APPROVAL_SECONDS)
        if p.ends_at is not None:
            # Moot once the period is over: the next one starts with its caps afresh.
            expires_at = min(expires_at, p.ends_at)
        period_text = (
            f"the {p.period} from {p.starts_at.isoformat()}"
            if p.starts_at is not None
            else "its whole life (it never resets)"
        )
        approval, _ = await self.approvals.open_approval(
            client_id,
            approval_id=approval_id,
            idempotency_key=key,
            role=APPROVER_ROLE,
            title=f"Let {budget.describe()} run over its caps for {period_text}",
            details={
                "kind": "budget_overrun",
                "budget_id": str(budget.id),
                "scope": budget.scope,
                "scope_id": budget.scope_id,
                "period": p.period,
                "period_start": p.starts_at.isoformat() if p.starts_at else "",
                "period_end": p.ends_at.isoformat() if p.ends_at else "",
                "caps": {r: budget.caps.get(r) for r in RESOURCES},
                "used": {r: p.used.get(r) for r in RESOURCES},
                "reserved": {r: p.reserved.get(r) for r in RESOURCES},
                "requested": {r: wanted.get(r) for r in RESOURCES},
                "grant": {r: extra.get(r) for r in RESOURCES},
                "round": rounds,
            },
            on_expiry="fail",
            expires_at=expires_at,
            workflow_id=f"approval-{approval_id}",
            requested_by="task",
            conn=conn,
        )
        await conn.execute(
            """UPDATE budget_periods SET approval_id = $2, approval_rounds = $3, updated_at = now()
            WHERE id = $1""",
            p.id,
            approval.id,
            rounds,
        )
        return approval

    async def _refuse(
        self, conn: Any, client_id: str, call: Call, refusal: _Refusal, *, announce: bool
    ) -> Reservation:
        """Record the refusal under the key and, the first time the key is refused, announce
        it in the same transaction."""
        budget, over = refusal.budget, refusal.over
        approval_id = str(refusal.approval.id) if refusal.approval else ""
        if announce:
            payload: dict[str, Any] = {
                "budget_id": str(budget.id),
                "scope": budget.scope,
                "scope_id": budget.scope_id,
                "key": call.key,
                "resource": over.resource,
                "requested": over.requested,
                "available": over.available,
                "action": "approval" if refusal.status == NEEDS_APPROVAL else "refused",
            }
            if approval_id:
                payload["approval_id"] = approval_id
            await self.events.add(
                conn, "task.budget_exceeded", payload, aggregate_id=str(budget.id)
            )
        await conn.execute(
            """UPDATE budget_reservations SET status = $3, refused_by = $4, reason = $5,
                approval_id = $6, budget_ids = '{}', hold_ids = '{}'
            WHERE client_id = $1 AND key = $2""",
            client_id,
            call.key,
            refusal.status,
            budget.id,
            refusal.reason,
            refusal.approval.id if refusal.approval else None,
        )
        return Reservation(
            key=call.key,
            status=refusal.status,
            amount=Amount(),
            budget_id=str(budget.id),
            reason=refusal.reason,
            approval_id=approval_id,
            resource=over.resource,
            asked=refusal.approval if refusal.asked else None,
        )

    async def settle(
        self,
        client_id: str,
        key: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        tool_calls: int,
        model: str = "",
    ) -> Reservation:
        """Release the hold, count what was used in the periods it was held in, and add it to
        the day's usage, once per key."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT * FROM budget_reservations WHERE client_id = $1 AND key = $2
                FOR UPDATE""",
                client_id,
                key,
            )
            if row is None:
                raise NotFound(f"reservation {key} not found")
            if row["status"] == SETTLED:
                return _reservation(row)
            if row["status"] != RESERVED:
                raise FailedPrecondition(
                    f"reservation {key} was refused, so nothing is held to settle: {row['reason']}"
                )
            model = model or row["model"]
            cost = self.prices.cost(model, prompt_tokens, completion_tokens, tool_calls)
            tokens = prompt_tokens + completion_tokens
            await conn.execute(
                """UPDATE budget_periods SET
                    reserved_tokens = GREATEST(reserved_tokens - $3, 0),
                    reserved_tool_calls = GREATEST(reserved_tool_calls - $4, 0),
                    reserved_cost_micros = GREATEST(reserved_cost_micros - $5, 0),
                    used_tokens = used_tokens + $6,
                    used_tool_calls = used_tool_calls + $7,
                    used_cost_micros = used_cost_micros + $8,
                    updated_at = now()
                WHERE client_id = $1 AND id = ANY($2::uuid[])""",
                client_id,
                row["hold_ids"],
                row["tokens"],
                row["tool_calls"],
                row["cost_micros"],
                tokens,
                tool_calls,
                cost,
            )
            settled = await conn.fetchrow(
                """UPDATE budget_reservations SET status = 'settled', model = $3,
                    settled_prompt_tokens = $4, settled_completion_tokens = $5,
                    settled_tool_calls = $6, settled_cost_micros = $7, settled_at = now()
                WHERE client_id = $1 AND key = $2 RETURNING *""",
                client_id,
                key,
                model,
                prompt_tokens,
                completion_tokens,
                tool_calls,
                cost,
            )
            if tokens or tool_calls:
                await conn.execute(
                    """INSERT INTO usage_daily AS u
                        (client_id, day, persona_id, model, calls, prompt_tokens,
                         completion_tokens, tool_calls, cost_micros)
                    VALUES ($1, $8, $2, $3, 1, $4, $5, $6, $7)
                    ON CONFLICT (client_id, day, persona_id, model) DO UPDATE SET
                        calls = u.calls + 1,
                        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
                        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
                        tool_calls = u.tool_calls + EXCLUDED.tool_calls,
                        cost_micros = u.cost_micros + EXCLUDED.cost_micros""",
                    client_id,
                    row["persona_id"],
                    model,
                    prompt_tokens,
                    completion_tokens,
                    tool_calls,
                    cost,
                    self.clock().astimezone(UTC).date(),
                )
        return _reservation(settled)

    async def usage(
        self,
        client_id: str,
        from_day: date,
        to_day: date,
        persona_id: str = "",
        model: str = "",
    ) -> list[UsageRow]:
        rows = await self.db.fetch(
            """SELECT day, persona_id, model, calls, prompt_tokens, completion_tokens,
                tool_calls, cost_micros
            FROM usage_daily
            WHERE client_id = $1 AND day BETWEEN $2 AND $3
              AND ($4 = '' OR persona_id = $4) AND ($5 = '' OR model = $5)
            ORDER BY day DESC, persona_id, model""",
            client_id,
            from_day,
            to_day,
            persona_id,
            model,
        )
        return [UsageRow(**dict(r)) for r in rows]
