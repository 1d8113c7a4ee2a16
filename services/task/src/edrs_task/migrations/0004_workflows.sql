-- Durable workflows (issue 11): the definition registry, runs and their steps as the Temporal
-- workflows report them, the effects ledger that makes activities idempotent, approvals and
-- schedules. Temporal holds the execution; these tables hold what the API reads.

CREATE TABLE workflow_definitions (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    description text NOT NULL DEFAULT '',
    spec jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, name, version)
);

CREATE TABLE workflow_runs (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    definition_id uuid NOT NULL REFERENCES workflow_definitions (id),
    workflow_name text NOT NULL,
    workflow_version integer NOT NULL,
    -- The Temporal workflow id of the current attempt.
    workflow_id text NOT NULL,
    attempt integer NOT NULL DEFAULT 1,
    status text NOT NULL DEFAULT 'running' CHECK (
        status IN ('running', 'waiting_for_approval', 'succeeded', 'failed', 'cancelled')
    ),
    input jsonb NOT NULL DEFAULT '{}',
    output jsonb NOT NULL DEFAULT '{}',
    error text NOT NULL DEFAULT '',
    idempotency_key text NULL,
    -- A hash of (definition, input), so a reused key with another request is refused.
    request_hash text NOT NULL DEFAULT '',
    schedule_id uuid NULL,
    parent_run_id uuid NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workflow_runs_idempotency ON workflow_runs (client_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflow_runs_client_page ON workflow_runs (client_id, created_at, id);

CREATE TABLE workflow_run_steps (
    run_id uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id text NOT NULL,
    client_id text NOT NULL,
    position integer NOT NULL,
    type text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (
        status IN ('pending', 'running', 'waiting_for_approval', 'succeeded', 'failed',
                   'compensated', 'skipped')
    ),
    attempts integer NOT NULL DEFAULT 0,
    output jsonb NULL,
    error text NOT NULL DEFAULT '',
    approval_id uuid NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_id)
);

-- One row per side effect that completed: key = Temporal workflow id + activity id. A retried
-- activity finds its row and returns the recorded result instead of acting again.
CREATE TABLE workflow_effects (
    key text PRIMARY KEY,
    client_id text NOT NULL,
    run_id uuid NOT NULL,
    step_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('step', 'compensation')),
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE approvals (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    idempotency_key text NOT NULL,
    role text NOT NULL,
    title text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    on_expiry text NOT NULL DEFAULT 'fail' CHECK (on_expiry IN ('fail', 'approve', 'reject')),
    expires_at timestamptz NOT NULL,
    decided_by text NOT NULL DEFAULT '',
    comment text NOT NULL DEFAULT '',
    decided_at timestamptz NULL,
    -- The Temporal workflow that waits for the decision (signalled once it is made).
    workflow_id text NOT NULL,
    run_id uuid NULL,
    step_id text NOT NULL DEFAULT '',
    requested_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, idempotency_key)
);
CREATE INDEX approvals_client_page ON approvals (client_id, created_at, id);
CREATE INDEX approvals_pending_by_role ON approvals (client_id, role) WHERE status = 'pending';

CREATE TABLE workflow_schedules (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    workflow_name text NOT NULL,
    workflow_version integer NOT NULL DEFAULT 0,
    cron text NOT NULL,
    time_zone text NOT NULL,
    input jsonb NOT NULL DEFAULT '{}',
    note text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_schedules_client_page ON workflow_schedules (client_id, created_at, id);
