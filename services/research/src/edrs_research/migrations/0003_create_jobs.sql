-- Research jobs (docs/research.md): the job, its log of updates (WatchJob), the record of every
-- step it has done (a retried or resumed activity finds its result here and does not search or
-- fetch again), the pages it fetched, and its report.
CREATE TABLE research_jobs (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    question text NOT NULL,
    -- The ResearchScope as JSON (protobuf JSON mapping).
    scope jsonb NOT NULL,
    state text NOT NULL,
    plan jsonb NOT NULL DEFAULT '[]',
    planner text NOT NULL DEFAULT '',
    progress jsonb NOT NULL DEFAULT '{}',
    error text NOT NULL DEFAULT '',
    persona_id text NOT NULL DEFAULT '',
    task_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz
);
CREATE INDEX research_jobs_client_page ON research_jobs (client_id, created_at, id);

-- One row per step of a job, in order: WatchJob replays them, then follows new ones.
CREATE TABLE research_job_updates (
    job_id uuid NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,
    detail text NOT NULL DEFAULT '',
    url text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- The result of each search, plan or verification a job made, keyed by what it was (e.g.
-- "knowledge:<collection>:<query>"): recorded before the activity returns, so a retry or a
-- resumed job reads it back instead of asking again. `runs` counts the times it really ran.
CREATE TABLE research_job_steps (
    job_id uuid NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    step_key text NOT NULL,
    result jsonb NOT NULL,
    runs integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, step_key)
);

-- Pages a job fetched (or was refused), keyed (job, url): a page is fetched once per job.
CREATE TABLE research_job_pages (
    job_id uuid NOT NULL REFERENCES research_jobs (id) ON DELETE CASCADE,
    url text NOT NULL,
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT '',
    source_id uuid,
    document_id text NOT NULL DEFAULT '',
    -- The page's outbound links (cited_by across the job's pages).
    links text[] NOT NULL DEFAULT '{}',
    fetches integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, url)
);

CREATE TABLE research_reports (
    job_id uuid PRIMARY KEY REFERENCES research_jobs (id) ON DELETE CASCADE,
    client_id text NOT NULL,
    -- The Report message, serialised (protobuf binary).
    report bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
