-- Tool calls a turn held for a human's approval (docs/integration.md, "Approved calls"), keyed by
-- the task service's approval id: the call exactly as the approval shows it, and what became of
-- it once decided (held -> approved -> completed | failed, or rejected | expired). The outcome is
-- also told in the conversation, as a message of role 'tool', and to the model in the user's next
-- turn of that conversation (`told_at` set once that turn is done).
CREATE TABLE held_tool_calls (
    client_id text NOT NULL,
    approval_id uuid NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    conversation_id text NOT NULL,
    message_id uuid NOT NULL,
    call_id text NOT NULL,
    tool text NOT NULL,
    arguments jsonb NOT NULL,
    impact text NOT NULL,
    reason text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'held'
        CHECK (status IN ('held', 'approved', 'completed', 'failed', 'rejected', 'expired')),
    result text NOT NULL DEFAULT '',
    decided_by text NOT NULL DEFAULT '',
    comment text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    told_at timestamptz NULL,
    PRIMARY KEY (client_id, approval_id),
    FOREIGN KEY (client_id, persona_id, user_id, conversation_id)
        REFERENCES conversations (client_id, persona_id, user_id, id) ON DELETE CASCADE
);

CREATE INDEX held_tool_calls_untold
    ON held_tool_calls (client_id, persona_id, user_id, conversation_id, updated_at)
    WHERE told_at IS NULL AND status IN ('completed', 'failed', 'rejected', 'expired');

-- The outcome of a held call is a message of the conversation too.
ALTER TABLE messages DROP CONSTRAINT messages_role_check;
ALTER TABLE messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ('user', 'assistant', 'tool'));
