"""A task's statuses and the moves between them: the one place that says which are legal."""

from __future__ import annotations

from edrs_core import FailedPrecondition

QUEUED, RUNNING, WAITING = "queued", "running", "waiting_for_approval"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"

STATUSES = (QUEUED, RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED)
OPEN = frozenset({QUEUED, RUNNING, WAITING})
FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

# Queued work has not started, so it can only start or be called off; a waiting task resumes
# (approved), fails (rejected or expired) or is cancelled. Final statuses never change.
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED}),
    RUNNING: frozenset({WAITING, SUCCEEDED, FAILED, CANCELLED}),
    WAITING: frozenset({RUNNING, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def check_transition(current: str, target: str) -> None:
    """FailedPrecondition naming both statuses when `current` → `target` is not a legal move."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: it is final"
        raise FailedPrecondition(
            f"a {current} task cannot become {target} (allowed from {current}: {allowed})",
            field="status",
        )
