CREATE TABLE traces (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    strategy text NOT NULL,
    prompt text NOT NULL,
    answer text NOT NULL,
    confidence double precision NOT NULL DEFAULT 0 CHECK (confidence BETWEEN 0 AND 1),
    prompt_tokens integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    duration_ms double precision NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Every read is scoped to one tenant and pages newest first by (created_at, id).
CREATE INDEX traces_client_page ON traces (client_id, created_at DESC, id DESC);
