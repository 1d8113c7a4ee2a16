-- Who may call the gateway (users, API keys), the tokens it issued, the keys that sign them, and
-- the audit log of security-relevant actions.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'member', 'integrator', 'viewer')),
    failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- "Ann@Example.com" and "ann@example.com" are the same person to a mail server and to the login.
CREATE UNIQUE INDEX users_email_unique ON users (tenant_id, lower(email));
-- Users are listed per tenant, oldest first, paging by (created_at, id).
CREATE INDEX users_page ON users (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL UNIQUE,
    secret_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'member', 'integrator', 'viewer')),
    scopes text[] NOT NULL DEFAULT '{}',
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_page ON api_keys (tenant_id, created_at, id);

CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY,
    -- Every token rotated out of one login shares the family; reuse of any of them revokes it.
    family_id uuid NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'api_key')),
    subject_id uuid NOT NULL,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    family_expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (subject_kind, subject_id);

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    algorithm text NOT NULL CHECK (algorithm = 'EdDSA'),
    -- PKCS#8 PEM of the private key, Fernet-encrypted with EDRS_GATEWAY_KEY_ENCRYPTION_SECRET.
    private_key_encrypted text NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at timestamptz
);
CREATE INDEX signing_keys_active ON signing_keys (created_at) WHERE retired_at IS NULL;

CREATE TABLE audit_events (
    id uuid PRIMARY KEY,
    -- NULL when the tenant named in a failed login does not exist: only operators see those.
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    actor text NOT NULL,
    action text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    target text NOT NULL DEFAULT '',
    details jsonb NOT NULL DEFAULT '{}',
    ip inet,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Admins read their tenant's log newest first, paging by (created_at, id).
CREATE INDEX audit_events_page ON audit_events (tenant_id, created_at, id);
