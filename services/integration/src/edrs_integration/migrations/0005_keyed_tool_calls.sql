-- Tool calls made with an idempotency key (CallToolRequest.idempotency_key): one row per tenant
-- and key, claimed before the tool runs, holding its first answer (or error) so a repeated call
-- replays it instead of running the tool twice. `stale_at` is when a claim still `running` counts
-- as lost (the service stopped during the call): its outcome is unknown, and it is never re-run.
CREATE TABLE keyed_tool_calls (
    client_id text NOT NULL,
    idempotency_key text NOT NULL,
    name text NOT NULL,
    arguments_sha256 text NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    content text NOT NULL DEFAULT '',
    structured jsonb NULL,
    is_error boolean NOT NULL DEFAULT false,
    impact text NOT NULL DEFAULT '',
    duration_ms double precision NOT NULL DEFAULT 0,
    error_code text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    stale_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL,
    PRIMARY KEY (client_id, idempotency_key)
);
