-- Budgets that reset every day, week or month in a time zone: what a budget used, holds and was
-- granted by approvals is counted per period (one row each, kept as history); a budget that
-- never resets has one row, period 'none'. A refused reservation is recorded with its reason, so
-- its task.budget_exceeded event is written once, in the same transaction.
ALTER TABLE budgets
    ADD COLUMN period text NOT NULL DEFAULT 'none'
        CHECK (period IN ('none', 'day', 'week', 'month')),
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

CREATE TABLE budget_periods (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    budget_id uuid NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    period text NOT NULL CHECK (period IN ('none', 'day', 'week', 'month')),
    -- The local calendar day the period starts on ('1970-01-01' for 'none').
    period_start date NOT NULL,
    starts_at timestamptz NULL,
    ends_at timestamptz NULL,
    used_tokens bigint NOT NULL DEFAULT 0,
    used_tool_calls bigint NOT NULL DEFAULT 0,
    used_cost_micros bigint NOT NULL DEFAULT 0,
    reserved_tokens bigint NOT NULL DEFAULT 0 CHECK (reserved_tokens >= 0),
    reserved_tool_calls bigint NOT NULL DEFAULT 0 CHECK (reserved_tool_calls >= 0),
    reserved_cost_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_cost_micros >= 0),
    -- Added to the caps by approved overruns of this period.
    granted_tokens bigint NOT NULL DEFAULT 0,
    granted_tool_calls bigint NOT NULL DEFAULT 0,
    granted_cost_micros bigint NOT NULL DEFAULT 0,
    -- The latest approval asked for an overrun of this period, and how many were asked.
    approval_id uuid NULL,
    approval_rounds integer NOT NULL DEFAULT 0,
    -- The approval whose grant is already in granted_* (so it is added once).
    granted_approval_id uuid NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (budget_id, period, period_start)
);
CREATE INDEX budget_periods_page ON budget_periods (client_id, budget_id, created_at, id);

INSERT INTO budget_periods (id, client_id, budget_id, period, period_start, used_tokens,
    used_tool_calls, used_cost_micros, reserved_tokens, reserved_tool_calls,
    reserved_cost_micros, created_at, updated_at)
SELECT gen_random_uuid(), client_id, id, 'none', DATE '1970-01-01', used_tokens, used_tool_calls,
    used_cost_micros, reserved_tokens, reserved_tool_calls, reserved_cost_micros, created_at,
    updated_at
FROM budgets;

ALTER TABLE budgets
    DROP COLUMN used_tokens,
    DROP COLUMN used_tool_calls,
    DROP COLUMN used_cost_micros,
    DROP COLUMN reserved_tokens,
    DROP COLUMN reserved_tool_calls,
    DROP COLUMN reserved_cost_micros;

-- A reservation holds in the period rows it was admitted in (hold_ids), so settlement releases
-- and counts there, even when it settles after the period reset.
ALTER TABLE budget_reservations
    ADD COLUMN hold_ids uuid[] NOT NULL DEFAULT '{}',
    -- A refused reservation: the budget, why, and the approval asked for (if any).
    ADD COLUMN refused_by uuid NULL,
    ADD COLUMN reason text NOT NULL DEFAULT '',
    ADD COLUMN approval_id uuid NULL,
    DROP CONSTRAINT budget_reservations_status_check,
    ADD CONSTRAINT budget_reservations_status_check
        CHECK (status IN ('reserved', 'settled', 'refused', 'needs_approval'));

UPDATE budget_reservations r SET hold_ids = ARRAY(
    SELECT p.id FROM budget_periods p WHERE p.budget_id = ANY(r.budget_ids)
)
WHERE cardinality(r.budget_ids) > 0;
