-- What the gateway does with sensitive data a tenant's clients send: rewrite it or refuse the request.
ALTER TABLE tenants
    ADD COLUMN dlp_policy text NOT NULL DEFAULT 'redact' CHECK (dlp_policy IN ('redact', 'block'));
