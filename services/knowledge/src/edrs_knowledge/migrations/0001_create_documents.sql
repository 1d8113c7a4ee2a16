CREATE TABLE documents (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    title text NOT NULL,
    text text NOT NULL,
    source text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Title words weigh more than body words when ranking (A = 1.0, D = 0.1 in ts_rank_cd).
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', text), 'D')
    ) STORED
);
-- Every read is scoped to one tenant and pages by (created_at, id).
CREATE INDEX documents_client_page ON documents (client_id, created_at, id);
CREATE INDEX documents_search ON documents USING gin (search);
