-- Every field of a Source (protos/edrs/research/v1/research.proto): what the fetch read, the
-- credibility with its reasons, the tenant's pin and block, and the knowledge document holding the
-- text. Rows from 0001 were never fetched: they become PENDING sources of their URL's host.
ALTER TABLE sources
    ADD COLUMN domain text NOT NULL DEFAULT '',
    -- The title as the tenant gave it (RegisterSource or UpdateSource); the page's title is used
    -- while this is empty.
    ADD COLUMN given_title text NOT NULL DEFAULT '',
    ADD COLUMN state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'fetched', 'failed')),
    ADD COLUMN fetch_error text NOT NULL DEFAULT '',
    ADD COLUMN final_url text NOT NULL DEFAULT '',
    ADD COLUMN author text NOT NULL DEFAULT '',
    ADD COLUMN published_at timestamptz,
    ADD COLUMN language text NOT NULL DEFAULT '',
    ADD COLUMN fetched_at timestamptz,
    ADD COLUMN content_hash text NOT NULL DEFAULT '',
    ADD COLUMN truncated boolean NOT NULL DEFAULT false,
    ADD COLUMN pinned boolean NOT NULL DEFAULT false,
    ADD COLUMN blocked boolean NOT NULL DEFAULT false,
    ADD COLUMN document_id text NOT NULL DEFAULT '',
    -- [{"signal", "weight", "detail"}], the reasons `credibility` is made of.
    ADD COLUMN reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT sources_pinned_or_blocked CHECK (NOT (pinned AND blocked));

UPDATE sources
   SET domain = lower(trim(BOTH '[]' FROM substring(url FROM '^[a-z]+://(\[[^]]*\]|[^/:?#]+)'))),
       given_title = CASE WHEN title <> url THEN title ELSE '' END,
       -- From now on `title` is the title read from the page.
       title = '',
       updated_at = created_at;

COMMENT ON COLUMN sources.title IS 'The title read from the page; empty before a fetch';

-- ListSources by domain, and the domain's pins and blocks research jobs look up.
CREATE INDEX sources_client_domain ON sources (client_id, domain);
