"""PostgreSQL adapter of budgets, reservations and usage.

Concurrency: a reservation locks every budget that applies (`SELECT ... FOR UPDATE`, in id order so
two reservations never wait on each other crosswise) and checks used + reserved + wanted against
each cap under that lock, so concurrent reservations are serialised per budget and never overshoot.
Idempotency: the reservation row's primary key is (tenant, key); a retry finds the first one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import NotFound, ResourceExhausted
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_task.budgets import Amount, Overrun, PriceTable, overrun
from edrs_task.store import Limits

TENANT, PERSONA, RUN = "tenant", "persona", "run"
RESERVED, SETTLED, NEEDS_APPROVAL = "reserved", "settled", "needs_approval"

_BUDGET_COLUMNS = (
    "id, scope, scope_id, max_tokens, max_tool_calls, max_cost_micros, on_exceed, used_tokens, "
    "used_tool_calls, used_cost_micros, reserved_tokens, reserved_tool_calls, "
    "reserved_cost_micros, created_at, updated_at"
)


@dataclass(frozen=True, kw_only=True)
class Budget:
    id: UUID
    scope: str
    scope_id: str
    caps: Amount
    on_exceed: str
    used: Amount
    reserved: Amount
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Reservation:
    key: str
    status: str
    amount: Amount
    budget_id: str = ""
    reason: str = ""


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


def _amount(row: Any, prefix: str) -> Amount:
    return Amount(
        tokens=row[f"{prefix}tokens"],
        tool_calls=row[f"{prefix}tool_calls"],
        cost_micros=row[f"{prefix}cost_micros"],
    )


def _budget(row: Any) -> Budget:
    return Budget(
        id=row["id"],
        scope=row["scope"],
        scope_id=row["scope_id"],
        caps=_amount(row, "max_"),
        on_exceed=row["on_exceed"],
        used=_amount(row, "used_"),
        reserved=_amount(row, "reserved_"),
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


class _Exceeded(Exception):
    def __init__(self, budget: Budget, over: Overrun) -> None:
        self.budget = budget
        self.over = over


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


class PostgresBudgetStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents, prices: PriceTable) -> None:
        self.db = db
        self.events = events
        self.prices = prices

    async def set(
        self, client_id: str, scope: str, scope_id: str, caps: Amount, on_exceed: str
    ) -> Budget:
        row = await self.db.fetchrow(
            f"""INSERT INTO budgets
                (id, client_id, scope, scope_id, max_tokens, max_tool_calls, max_cost_micros,
                 on_exceed)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (client_id, scope, scope_id) DO UPDATE SET
                max_tokens = EXCLUDED.max_tokens,
                max_tool_calls = EXCLUDED.max_tool_calls,
                max_cost_micros = EXCLUDED.max_cost_micros,
                on_exceed = EXCLUDED.on_exceed,
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
        )
        return _budget(row)

    async def get(self, client_id: str, budget_id: UUID) -> Budget | None:
        row = await self.db.fetchrow(
            f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE client_id = $1 AND id = $2",
            client_id,
            budget_id,
        )
        return _budget(row) if row else None

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
        return [_budget(r) for r in rows], token

    async def delete(self, client_id: str, budget_id: UUID) -> None:
        deleted = await self.db.fetchval(
            "DELETE FROM budgets WHERE client_id = $1 AND id = $2 RETURNING id",
            client_id,
            budget_id,
        )
        if deleted is None:
            raise NotFound(f"budget {budget_id} not found")

    async def reserve(self, client_id: str, call: Call) -> Reservation:
        """Hold `call`'s estimate in every budget that applies, or none of them."""
        wanted = Amount(
            tokens=call.tokens,
            tool_calls=call.tool_calls,
            cost_micros=self.prices.estimate(call.model, call.tokens, call.tool_calls),
        )
        try:
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
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
                if row is None:
                    # A retry (or a concurrent twin, which waited on the key's index entry until
                    # the first committed): the first reservation is the answer.
                    first = await conn.fetchrow(
                        "SELECT * FROM budget_reservations WHERE client_id = $1 AND key = $2",
                        client_id,
                        call.key,
                    )
                    return _reservation(first)
                budgets = [
                    _budget(r)
                    for r in await conn.fetch(
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
                ]
                for budget in budgets:
                    over = overrun(budget.caps, budget.used, budget.reserved, wanted)
                    if over is not None:
                        raise _Exceeded(budget, over)  # rolls the reservation back
                await conn.execute(
                    """UPDATE budgets SET reserved_tokens = reserved_tokens + $3,
                        reserved_tool_calls = reserved_tool_calls + $4,
                        reserved_cost_micros = reserved_cost_micros + $5, updated_at = now()
                    WHERE client_id = $1 AND id = ANY($2::uuid[])""",
                    client_id,
                    [b.id for b in budgets],
                    wanted.tokens,
                    wanted.tool_calls,
                    wanted.cost_micros,
                )
                await conn.execute(
                    """UPDATE budget_reservations SET budget_ids = $3
                    WHERE client_id = $1 AND key = $2""",
                    client_id,
                    call.key,
                    [b.id for b in budgets],
                )
                return Reservation(key=call.key, status=RESERVED, amount=wanted)
        except _Exceeded as exc:
            return await self._exceeded(client_id, call, exc.budget, exc.over)

    async def _exceeded(
        self, client_id: str, call: Call, budget: Budget, over: Overrun
    ) -> Reservation:
        """Announce the overrun; refuse, or answer that a human must approve (nothing is held,
        so a retry of the key asks again)."""
        action = "approval" if budget.on_exceed == "approval" else "refused"
        payload: dict[str, Any] = {
            "budget_id": str(budget.id),
            "scope": budget.scope,
            "scope_id": budget.scope_id,
            "key": call.key,
            "resource": over.resource,
            "requested": over.requested,
            "available": over.available,
            "action": action,
        }
        async with self.db.acquire() as conn, conn.transaction():
            await self.events.add(
                conn, "task.budget_exceeded", payload, aggregate_id=str(budget.id)
            )
        scope = budget.scope + (f" {budget.scope_id}" if budget.scope_id else "")
        reason = (
            f"the {scope} budget {budget.id} has {max(over.available, 0)} {over.resource} left; "
            f"the call needs {over.requested}"
        )
        if action == "approval":
            return Reservation(
                key=call.key,
                status=NEEDS_APPROVAL,
                amount=Amount(),
                budget_id=str(budget.id),
                reason=reason,
            )
        raise ResourceExhausted(reason, field=over.resource)

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
        """Release the hold, count what was used, and add it to the day's usage, once per key."""
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
            model = model or row["model"]
            cost = self.prices.cost(model, prompt_tokens, completion_tokens, tool_calls)
            tokens = prompt_tokens + completion_tokens
            await conn.execute(
                """UPDATE budgets SET
                    reserved_tokens = GREATEST(reserved_tokens - $3, 0),
                    reserved_tool_calls = GREATEST(reserved_tool_calls - $4, 0),
                    reserved_cost_micros = GREATEST(reserved_cost_micros - $5, 0),
                    used_tokens = used_tokens + $6,
                    used_tool_calls = used_tool_calls + $7,
                    used_cost_micros = used_cost_micros + $8,
                    updated_at = now()
                WHERE client_id = $1 AND id = ANY($2::uuid[])""",
                client_id,
                row["budget_ids"],
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
                    VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, $3, 1, $4, $5, $6, $7)
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
