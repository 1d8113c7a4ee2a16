-- MCP servers a tenant added, and the tools they listed at the last refresh (docs/integration.md,
-- "Tools"). Built-in and connector tools are not stored: they follow from the code and the
-- connectors table.
CREATE TABLE mcp_servers (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    transport text NOT NULL CHECK (transport IN ('stdio', 'http')),
    command text NOT NULL DEFAULT '',
    args jsonb NOT NULL DEFAULT '[]',
    url text NOT NULL DEFAULT '',
    call_timeout_seconds double precision NOT NULL,
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz NOT NULL DEFAULT now()
);
-- Names prefix tool names, so they are unique within a tenant.
CREATE UNIQUE INDEX mcp_servers_client_name_unique ON mcp_servers (client_id, name);
CREATE INDEX mcp_servers_client_page ON mcp_servers (client_id, created_at, id);

CREATE TABLE mcp_tools (
    client_id text NOT NULL,
    server_id uuid NOT NULL REFERENCES mcp_servers (id) ON DELETE CASCADE,
    -- The name the tenant's personas call it by: "<server name>__<remote name>".
    name text NOT NULL,
    remote_name text NOT NULL,
    description text NOT NULL DEFAULT '',
    input_schema jsonb NOT NULL,
    impact text NOT NULL CHECK (impact IN ('read', 'write', 'destructive')),
    -- Set by UpdateTool: a refresh keeps it rather than the server's hint.
    impact_overridden boolean NOT NULL DEFAULT false,
    position integer NOT NULL,
    PRIMARY KEY (client_id, name)
);
CREATE INDEX mcp_tools_server ON mcp_tools (server_id, position);
