-- Collections of documents, each document's versions (the input until it is processed, then its
-- stored text), the passages (chunks) of each document's indexed version with their provenance,
-- batch import jobs, and the knowledge graph's tables. docs/knowledge.md describes them.

CREATE TABLE collections (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, name)
);
CREATE INDEX collections_page ON collections (client_id, created_at, id);

-- The documents of the first schema (raw text, no collection) move into a collection named
-- "default" of their tenant, as version 1 QUEUED: the service ingests them on start-up.
ALTER TABLE documents RENAME TO documents_v0;

CREATE TABLE documents (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    external_id text,
    title text NOT NULL,
    source text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    -- The newest version (its state is the document's state).
    current_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX documents_external_id
    ON documents (client_id, collection_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX documents_page ON documents (client_id, created_at, id);
CREATE INDEX documents_collection_page ON documents (client_id, collection_id, created_at, id);
CREATE INDEX documents_metadata ON documents USING gin (metadata jsonb_path_ops);

CREATE TABLE document_versions (
    client_id text NOT NULL,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version integer NOT NULL,
    title text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL CHECK (state IN ('queued', 'parsing', 'embedding', 'indexed', 'failed')),
    failure_code text NOT NULL DEFAULT '',
    failure_message text NOT NULL DEFAULT '',
    -- What was sent: a file's bytes (or UTF-8 text), its name and declared type. The bytes are
    -- dropped once the version is processed; its text stays.
    input bytea,
    input_is_text boolean NOT NULL DEFAULT false,
    filename text NOT NULL DEFAULT '',
    content_type text NOT NULL DEFAULT '',
    content_hash text NOT NULL,
    size_bytes bigint NOT NULL,
    format text NOT NULL DEFAULT '',
    page_count integer NOT NULL DEFAULT 0,
    text text,
    text_length bigint NOT NULL DEFAULT 0,
    chunk_count integer NOT NULL DEFAULT 0,
    chunks_embedded integer NOT NULL DEFAULT 0,
    chunks_reused integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (document_id, version)
);
-- The ingestion queue: the versions not yet at an end state, oldest first.
CREATE INDEX document_versions_pending
    ON document_versions (created_at) WHERE state IN ('queued', 'parsing', 'embedding');

CREATE TABLE chunks (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    collection_id uuid NOT NULL,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    -- The document version whose text start_offset/end_offset point into.
    version integer NOT NULL,
    chunk_index integer NOT NULL,
    text text NOT NULL,
    start_offset bigint NOT NULL,
    end_offset bigint NOT NULL,
    token_count integer NOT NULL,
    heading_path text[] NOT NULL DEFAULT '{}',
    page integer,
    -- sha256 of text: with the heading path, what decides whether a new version re-embeds it.
    content_hash text NOT NULL
);
CREATE INDEX chunks_document ON chunks (client_id, document_id, chunk_index);
CREATE INDEX chunks_collection ON chunks (client_id, collection_id);

CREATE TABLE import_jobs (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    total integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_jobs_page ON import_jobs (client_id, created_at, id);

CREATE TABLE import_job_items (
    job_id uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version integer NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('created', 'updated', 'unchanged')),
    PRIMARY KEY (job_id, position)
);
CREATE INDEX import_job_items_document ON import_job_items (document_id);

-- The knowledge graph: one entity per normalised name in a tenant, relations between entities
-- valid over a time range, and the passages each was read from (provenance: deleting a passage
-- deletes its provenance).
CREATE TABLE entities (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    name text NOT NULL,
    normalized_name text NOT NULL,
    type text NOT NULL DEFAULT '',
    aliases text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, normalized_name)
);
CREATE INDEX entities_page ON entities (client_id, name, id);

CREATE TABLE entity_mentions (
    client_id text NOT NULL,
    entity_id uuid NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    chunk_id uuid NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    collection_id uuid NOT NULL,
    PRIMARY KEY (entity_id, chunk_id)
);
CREATE INDEX entity_mentions_chunk ON entity_mentions (chunk_id);

CREATE TABLE relations (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    subject_id uuid NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    predicate text NOT NULL,
    object_id uuid NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    valid_from timestamptz,
    valid_to timestamptz,
    superseded_by uuid REFERENCES relations (id) ON DELETE SET NULL,
    supersede_reason text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX relations_subject ON relations (client_id, subject_id);
CREATE INDEX relations_object ON relations (client_id, object_id);

CREATE TABLE relation_sources (
    relation_id uuid NOT NULL REFERENCES relations (id) ON DELETE CASCADE,
    chunk_id uuid NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    PRIMARY KEY (relation_id, chunk_id)
);
CREATE INDEX relation_sources_chunk ON relation_sources (chunk_id);

INSERT INTO collections (id, client_id, name, description)
SELECT gen_random_uuid(), client_id, 'default', 'Documents ingested before collections existed'
FROM documents_v0 GROUP BY client_id;

INSERT INTO documents (id, client_id, collection_id, title, source, metadata, created_at, updated_at)
SELECT d.id, d.client_id, c.id, d.title, d.source, d.metadata, d.created_at, d.created_at
FROM documents_v0 d JOIN collections c ON c.client_id = d.client_id AND c.name = 'default';

INSERT INTO document_versions (
    client_id, document_id, version, title, metadata, state, input, input_is_text, content_type,
    content_hash, size_bytes, created_at
)
SELECT d.client_id, d.id, 1, d.title, d.metadata, 'queued', convert_to(d.text, 'UTF8'), true,
       'text/plain', encode(sha256(convert_to(d.text, 'UTF8')), 'hex'),
       octet_length(convert_to(d.text, 'UTF8')), d.created_at
FROM documents_v0 d;

DROP TABLE documents_v0;
