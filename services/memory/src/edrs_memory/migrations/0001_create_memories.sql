CREATE TABLE memories (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    conversation_id text NOT NULL DEFAULT '',
    text text NOT NULL,
    importance double precision NOT NULL CHECK (importance >= 0 AND importance <= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    search tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
-- Recall reads one persona's memories of one user, newest first.
CREATE INDEX memories_recall ON memories (client_id, persona_id, user_id, created_at);
-- Recall also takes the best full-text matches, however old.
CREATE INDEX memories_search ON memories USING gin (search);
