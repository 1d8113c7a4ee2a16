-- The task lifecycle (issue 11): queued → running → waiting_for_approval → succeeded / failed /
-- cancelled, due dates, budgets, the workflow run executing a task, subtasks from decomposition,
-- and an append-only timeline.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
UPDATE tasks SET status = 'queued' WHERE status = 'pending';
ALTER TABLE tasks ALTER COLUMN status SET DEFAULT 'queued';
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (
    status IN ('queued', 'running', 'waiting_for_approval', 'succeeded', 'failed', 'cancelled')
);
ALTER TABLE tasks
    ADD COLUMN due_at timestamptz NULL,
    ADD COLUMN budget_max_tokens bigint NOT NULL DEFAULT 0 CHECK (budget_max_tokens >= 0),
    ADD COLUMN budget_max_tool_calls bigint NOT NULL DEFAULT 0 CHECK (budget_max_tool_calls >= 0),
    ADD COLUMN budget_max_cost_micros bigint NOT NULL DEFAULT 0 CHECK (budget_max_cost_micros >= 0),
    -- A run of the workflow engine (Temporal workflow id): text, as the engine names it.
    ADD COLUMN workflow_run_id text NOT NULL DEFAULT '',
    ADD COLUMN parent_task_id uuid NULL REFERENCES tasks (id),
    ADD COLUMN assignment_reason text NOT NULL DEFAULT '',
    ADD COLUMN step_type text NOT NULL DEFAULT '',
    ADD COLUMN depends_on uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN outcome text NOT NULL DEFAULT '',
    -- The user who asked for the task (told when it completes); '' for a service's task.
    ADD COLUMN created_by text NOT NULL DEFAULT '';

-- Open work per persona: the tie-breaker of assignment.
CREATE INDEX tasks_open_by_assignee ON tasks (client_id, assignee_persona_id)
    WHERE status IN ('queued', 'running', 'waiting_for_approval');
CREATE INDEX tasks_client_parent ON tasks (client_id, parent_task_id) WHERE parent_task_id IS NOT NULL;

-- What happened to a task, oldest first. Rows are only ever inserted.
CREATE TABLE task_timeline (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    task_id uuid NOT NULL REFERENCES tasks (id),
    kind text NOT NULL,
    from_status text NOT NULL DEFAULT '',
    to_status text NOT NULL DEFAULT '',
    note text NOT NULL DEFAULT '',
    actor text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX task_timeline_page ON task_timeline (client_id, task_id, created_at, id);
