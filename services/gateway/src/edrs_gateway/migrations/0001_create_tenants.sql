CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    tier text NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'professional', 'enterprise')),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- "Acme" and "ACME" are the same organisation to an operator.
CREATE UNIQUE INDEX tenants_name_unique ON tenants (lower(name));
-- Tenants are listed oldest first, paging by (created_at, id).
CREATE INDEX tenants_page ON tenants (created_at, id);
