-- EDRS transactional outbox: a service writes its event in the same transaction as its domain rows.
CREATE TABLE IF NOT EXISTS edrs_outbox (
    position     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    priority     text        NOT NULL,
    client_id    text,
    aggregate_id text,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
-- The relay reads only unsent rows, in position order; keep that scan small.
CREATE INDEX IF NOT EXISTS edrs_outbox_pending ON edrs_outbox (position) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS edrs_outbox_sent_at ON edrs_outbox (sent_at) WHERE sent_at IS NOT NULL;

-- One notification per inserting statement (not per row) wakes the relay.
CREATE OR REPLACE FUNCTION edrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('edrs_outbox', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER edrs_outbox_notify
    AFTER INSERT ON edrs_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION edrs_outbox_notify();
