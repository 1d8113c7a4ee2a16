-- Budgets per tenant, persona and run on tokens, tool calls and money (millionths of a US dollar),
-- reservations idempotent by the caller's key, and usage per day, persona and model.
CREATE TABLE budgets (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('tenant', 'persona', 'run')),
    -- '' for the tenant scope; a persona id or a run id otherwise.
    scope_id text NOT NULL DEFAULT '',
    max_tokens bigint NOT NULL DEFAULT 0 CHECK (max_tokens >= 0),
    max_tool_calls bigint NOT NULL DEFAULT 0 CHECK (max_tool_calls >= 0),
    max_cost_micros bigint NOT NULL DEFAULT 0 CHECK (max_cost_micros >= 0),
    on_exceed text NOT NULL DEFAULT 'refuse' CHECK (on_exceed IN ('refuse', 'approval')),
    used_tokens bigint NOT NULL DEFAULT 0,
    used_tool_calls bigint NOT NULL DEFAULT 0,
    used_cost_micros bigint NOT NULL DEFAULT 0,
    reserved_tokens bigint NOT NULL DEFAULT 0 CHECK (reserved_tokens >= 0),
    reserved_tool_calls bigint NOT NULL DEFAULT 0 CHECK (reserved_tool_calls >= 0),
    reserved_cost_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_cost_micros >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, scope, scope_id)
);
CREATE INDEX budgets_client_page ON budgets (client_id, created_at, id);

CREATE TABLE budget_reservations (
    client_id text NOT NULL,
    key text NOT NULL,
    persona_id text NOT NULL DEFAULT '',
    run_id text NOT NULL DEFAULT '',
    model text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('reserved', 'settled')),
    tokens bigint NOT NULL,
    tool_calls bigint NOT NULL,
    cost_micros bigint NOT NULL,
    -- The budgets held from, to release exactly those at settlement.
    budget_ids uuid[] NOT NULL DEFAULT '{}',
    settled_prompt_tokens bigint NOT NULL DEFAULT 0,
    settled_completion_tokens bigint NOT NULL DEFAULT 0,
    settled_tool_calls bigint NOT NULL DEFAULT 0,
    settled_cost_micros bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz NULL,
    PRIMARY KEY (client_id, key)
);

CREATE TABLE usage_daily (
    client_id text NOT NULL,
    day date NOT NULL,
    persona_id text NOT NULL DEFAULT '',
    model text NOT NULL DEFAULT '',
    calls bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    tool_calls bigint NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, day, persona_id, model)
);
