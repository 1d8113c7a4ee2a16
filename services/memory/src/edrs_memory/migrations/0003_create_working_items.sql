-- Working memory, durable copy: Redis holds the hot set; this table rebuilds it when Redis has
-- lost a conversation. Evicted and expired items are deleted here too.
CREATE TABLE working_items (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    conversation_id text NOT NULL,
    text text NOT NULL,
    priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    kind text NOT NULL DEFAULT 'note',
    role text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX working_items_conversation
    ON working_items (client_id, persona_id, user_id, conversation_id, created_at);
CREATE INDEX working_items_expiry ON working_items (expires_at);
