-- EDRS inbox: the events each consumer has handled, written in the handler's own transaction.
CREATE TABLE IF NOT EXISTS edrs_inbox (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
