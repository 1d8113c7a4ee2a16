-- Conversations, their messages, what a persona knows of each user, and co-worker relations.

-- A conversation id is chosen by the client; it is scoped to (tenant, persona, user), so another
-- user's conversation with the same id is a different conversation.
CREATE TABLE conversations (
    client_id text NOT NULL,
    persona_id uuid NOT NULL REFERENCES personas (id),
    user_id text NOT NULL,
    id text NOT NULL,
    message_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, persona_id, user_id, id)
);
-- ListConversations pages most recent first.
CREATE INDEX conversations_recent
    ON conversations (client_id, persona_id, user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    conversation_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    text text NOT NULL,
    trace_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (client_id, persona_id, user_id, conversation_id)
        REFERENCES conversations (client_id, persona_id, user_id, id) ON DELETE CASCADE
);
-- ListMessages pages oldest first by (created_at, id) within one conversation.
CREATE INDEX messages_conversation_page
    ON messages (client_id, persona_id, user_id, conversation_id, created_at, id);

CREATE TABLE relationships (
    client_id text NOT NULL,
    persona_id uuid NOT NULL REFERENCES personas (id),
    user_id text NOT NULL,
    notes text[] NOT NULL DEFAULT '{}',
    interaction_count integer NOT NULL DEFAULT 0,
    first_interaction_at timestamptz,
    last_interaction_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, persona_id, user_id)
);

-- One row per direction, so "who works with X" is one index scan; both rows change together.
CREATE TABLE coworkers (
    client_id text NOT NULL,
    persona_id uuid NOT NULL REFERENCES personas (id),
    coworker_id uuid NOT NULL REFERENCES personas (id),
    relation text NOT NULL DEFAULT '',
    handover text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, persona_id, coworker_id),
    CHECK (persona_id <> coworker_id)
);

-- ListPersonas without archived ones.
CREATE INDEX personas_client_status_page ON personas (client_id, status, created_at, id);
