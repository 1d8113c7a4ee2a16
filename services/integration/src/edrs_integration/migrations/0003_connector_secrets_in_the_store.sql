-- Connector secrets move to the secret store (Vault/OpenBao, docs/decisions/0011): the row keeps
-- which keys are secret and the store's version of them, never a value. Rows written before this
-- hold {"fernet": ...} values in config; the service moves them into the store at start-up
-- (store/postgres.py, move_sealed_secrets) and sets secret_version.
ALTER TABLE connectors
    ADD COLUMN secret_keys text[] NOT NULL DEFAULT '{}',
    ADD COLUMN secret_version integer,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE connectors DROP CONSTRAINT connectors_kind_check;
ALTER TABLE connectors ADD CONSTRAINT connectors_kind_check
    CHECK (kind IN ('webhook', 'http', 'mcp', 'smtp'));
