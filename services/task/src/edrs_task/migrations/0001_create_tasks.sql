CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- A persona owned by the persona service: checked over gRPC at write time, so no foreign key.
    assignee_persona_id uuid NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Every read is scoped to one tenant and pages by (created_at, id).
CREATE INDEX tasks_client_page ON tasks (client_id, created_at, id);
