-- Webhooks out: subscriptions, one delivery per (subscription, event) with its attempts; webhooks
-- in: the ids already accepted per connector (docs/integration.md, "Webhooks"). Secrets are in the
-- secret store (docs/decisions/0011): rows keep the store's version only.
CREATE TABLE webhook_subscriptions (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    secret_version integer NOT NULL,
    -- Until then the previous secret signs beside the current one (rotation).
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_subscriptions_client_page ON webhook_subscriptions (client_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    event_type text NOT NULL,
    -- The exact bytes sent on every attempt (the signature covers them), as text.
    body text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'dead')),
    -- Attempts in the current round of the retry schedule (a replay starts a new round).
    round_attempts integer NOT NULL DEFAULT 0,
    -- Due time of the next attempt; while an attempt is in flight, the end of its lease.
    next_attempt_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    -- An event reaches a subscription once, however often the bus redelivers it.
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (client_id, subscription_id, created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code integer NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    latency_ms bigint NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE inbound_webhook_ids (
    client_id text NOT NULL,
    connector_id uuid NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    webhook_id text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (connector_id, webhook_id)
);
CREATE INDEX inbound_webhook_ids_age ON inbound_webhook_ids (received_at);
