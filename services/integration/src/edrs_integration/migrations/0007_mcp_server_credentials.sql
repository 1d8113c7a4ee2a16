-- Credentials of MCP servers (docs/integration.md, "MCP servers"): the headers an HTTP server gets
-- on every request and the environment variables of a stdio server's process. Their values live
-- in the secret store at tenants/<client id>/mcp-servers/<server id>; the row keeps the names and
-- the secret store's version only.
ALTER TABLE mcp_servers
    ADD COLUMN header_names text[] NOT NULL DEFAULT '{}',
    ADD COLUMN env_names text[] NOT NULL DEFAULT '{}',
    ADD COLUMN secret_version integer;
