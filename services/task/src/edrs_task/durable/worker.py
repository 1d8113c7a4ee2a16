"""The Temporal worker the task service hosts: the workflows and activities on its task queue."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from edrs_task.durable.activities import WorkflowActivities
from edrs_task.durable.workflows import ApprovalWait, WorkflowRun


def build_worker(client: Client, task_queue: str, activities: WorkflowActivities) -> Worker:
    # Replayed workflows must not wait on a dead worker's sticky cache for long.
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[WorkflowRun, ApprovalWait],
        activities=activities.all(),
        max_concurrent_activities=100,
    )
