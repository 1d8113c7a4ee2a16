-- Tasks that finished (task.task_completed), waiting to be told to the user who asked for them in
-- their next conversation with the assignee; `told_at` is set once the turn that told them is done.
CREATE TABLE task_notices (
    client_id text NOT NULL,
    task_id uuid NOT NULL,
    persona_id uuid NOT NULL,
    user_id text NOT NULL,
    title text NOT NULL,
    status text NOT NULL,
    outcome text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    told_at timestamptz NULL,
    PRIMARY KEY (client_id, task_id)
);
CREATE INDEX task_notices_untold ON task_notices (client_id, persona_id, user_id, created_at)
    WHERE told_at IS NULL;
