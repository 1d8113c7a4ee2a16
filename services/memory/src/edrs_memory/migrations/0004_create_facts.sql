-- Facts about a user, valid from one time until superseded; superseded facts are kept.
CREATE TABLE facts (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    attribute text NOT NULL,
    value text NOT NULL,
    statement text NOT NULL DEFAULT '',
    source text NOT NULL CHECK (source IN ('rule', 'user')),
    source_episode_id uuid,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    -- Deleting the newer fact (the user's request) leaves the old one superseded, by nothing.
    superseded_by uuid REFERENCES facts (id) ON DELETE SET NULL
);
CREATE INDEX facts_user ON facts (client_id, persona_id, user_id, attribute, valid_from);
