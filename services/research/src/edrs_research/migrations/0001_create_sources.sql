CREATE TABLE sources (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    -- Normalised by edrs_research.urls, so one page registered twice collides here.
    url text NOT NULL,
    title text NOT NULL,
    credibility double precision NOT NULL CHECK (credibility >= 0 AND credibility <= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sources_client_url UNIQUE (client_id, url)
);
-- Every read is scoped to one tenant and pages by (created_at, id).
CREATE INDEX sources_client_page ON sources (client_id, created_at, id);
