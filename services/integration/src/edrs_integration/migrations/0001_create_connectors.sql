CREATE TABLE connectors (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('webhook', 'http', 'mcp')),
    -- Plain values are JSON strings; secrets are {"fernet": "<token>"} (see store/postgres.py).
    config jsonb NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Names are unique within a tenant; "Slack" and "slack" would confuse whoever picks one.
CREATE UNIQUE INDEX connectors_client_name_unique ON connectors (client_id, lower(name));
-- Every read is scoped to one tenant and pages by (created_at, id).
CREATE INDEX connectors_client_page ON connectors (client_id, created_at, id);
