CREATE TABLE personas (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    responsibilities text[] NOT NULL DEFAULT '{}',
    skills text[] NOT NULL DEFAULT '{}',
    tone text NOT NULL DEFAULT '',
    instructions text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Every read is scoped to one tenant and pages by (created_at, id).
CREATE INDEX personas_client_page ON personas (client_id, created_at, id);
