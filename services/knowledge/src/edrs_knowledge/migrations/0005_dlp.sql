-- DLP of the text read from files the gateway cannot scan (PDF, DOCX, base64 content, large text
-- files): the tenant's policy travels with the version to the ingestion worker, which redacts or
-- blocks after parsing (docs/knowledge.md, "Sensitive data"); what it redacted is counted per kind,
-- never kept.
ALTER TABLE document_versions
    ADD COLUMN dlp_policy text NOT NULL DEFAULT ''
        CHECK (dlp_policy IN ('', 'redact', 'block')),
    ADD COLUMN redactions jsonb NOT NULL DEFAULT '{}'::jsonb;
