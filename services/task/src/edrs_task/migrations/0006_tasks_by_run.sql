-- The task a workflow run executes, found by its run: a run's model and tool calls are charged to
-- the budget of that task's assignee (docs/tasks.md, "Workflow steps").
CREATE INDEX tasks_by_workflow_run ON tasks (client_id, workflow_run_id) WHERE workflow_run_id <> '';
