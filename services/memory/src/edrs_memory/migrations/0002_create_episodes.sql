-- Episodic memory: every turn and notable event, with its embedding, partitioned by month so
-- retention drops whole partitions. The maintenance job (retention.py) creates the monthly
-- partitions; the DEFAULT partition takes any row no monthly partition covers, so no insert fails.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE episodes (
    id uuid NOT NULL,
    client_id text NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    conversation_id text NOT NULL DEFAULT '',
    kind text NOT NULL DEFAULT 'note' CHECK (kind IN ('message', 'event', 'note')),
    role text NOT NULL DEFAULT '' CHECK (role IN ('', 'user', 'assistant')),
    text text NOT NULL,
    importance double precision NOT NULL CHECK (importance >= 0 AND importance <= 1),
    trace_id text NOT NULL DEFAULT '',
    -- NULL for rows carried over from before embeddings; recall scores their relevance 0.
    embedding vector(384),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A partitioned table's keys must include the partition column.
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE episodes_default PARTITION OF episodes DEFAULT;

-- Recall's scope (tenant, persona, user), newest first; also serves small scopes' exact scans.
CREATE INDEX episodes_scope ON episodes (client_id, persona_id, user_id, created_at);
-- Recall's nearest neighbours by cosine distance, for scopes too large to scan exactly.
CREATE INDEX episodes_embedding ON episodes USING hnsw (embedding vector_cosine_ops);

-- The episodes kept so far move over, without embeddings (nothing could compute them here).
INSERT INTO episodes
    (id, client_id, persona_id, user_id, conversation_id, kind, text, importance, created_at)
SELECT id, client_id, persona_id, user_id, conversation_id, 'note', text, importance, created_at
FROM memories;

DROP TABLE memories;
