-- The knowledge graph as extraction writes it (docs/knowledge.md, "The knowledge graph"): an
-- entity is found by its normalised name or by the normalised form of any alias, and a relation
-- (subject, predicate, object) exists once per tenant, with every passage it was read from.

ALTER TABLE entities ADD COLUMN normalized_aliases text[] NOT NULL DEFAULT '{}';
CREATE INDEX entities_normalized_aliases ON entities USING gin (normalized_aliases);

CREATE UNIQUE INDEX relations_fact ON relations (client_id, subject_id, predicate, object_id);
CREATE INDEX relations_superseded_by ON relations (superseded_by) WHERE superseded_by IS NOT NULL;
