-- What a reasoning call read and produced, beyond its summary: the fleet reads traces back to see
-- what reached the model and why an answer came out as it did.
ALTER TABLE traces
    ADD COLUMN messages jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN context jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN samples jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN unsupported_claims jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN model text NOT NULL DEFAULT '',
    ADD COLUMN timings jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN options jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN draft text NOT NULL DEFAULT '';
-- ListTraces filters by labels (labels @> '{"conversation_id": "..."}').
CREATE INDEX traces_labels ON traces USING gin (labels jsonb_path_ops);
