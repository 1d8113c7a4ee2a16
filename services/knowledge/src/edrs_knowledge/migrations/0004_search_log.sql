-- Every search, recorded after it answered, for learning gaps (docs/knowledge.md, "Learning
-- gaps"): the questions a collection answered poorly. Only the query text is kept (DLP applies
-- at the gateway before a query reaches the service), never the passages; rows older than the
-- retention setting are pruned.

CREATE TABLE search_log (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    collection_ids uuid[] NOT NULL,
    query text NOT NULL,
    normalized_query text NOT NULL,
    mode text NOT NULL,
    k integer NOT NULL,
    passages integer NOT NULL,
    -- The best cosine similarity of the vector ranking; NULL when it did not run (keyword mode)
    -- or found nothing.
    best_similarity double precision,
    -- The first passage's score (the mode's); NULL when no passage was returned.
    best_score double precision,
    origin text NOT NULL,
    -- The calling identity's kind ("user", "api_key", ...), or the service's name for a service
    -- identity; never a person's id.
    caller text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX search_log_collections ON search_log USING gin (collection_ids);
CREATE INDEX search_log_tenant_time ON search_log (client_id, created_at);
CREATE INDEX search_log_time ON search_log (created_at);
