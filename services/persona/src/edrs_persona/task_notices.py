"""Finished tasks told to the user: the persona service's consumer of `task.task_completed`, and the
lines a turn adds to its prompt until they have been told once."""

from __future__ import annotations

from edrs_core import ServiceSettings
from edrs_core.consumers import ConsumedEvent

from edrs_persona.store import PersonaStore, TaskNotice

# The durable consumer's name on the bus and in the inbox: never rename it (see docs/events.md).
CONSUMER = "persona-task-completed"
# Told per turn, oldest first; the rest wait for the next turn.
PER_TURN = 5
OUTCOME_MAX = 300


async def remember_completed_task(
    delivery: ConsumedEvent[ServiceSettings], store: PersonaStore
) -> None:
    """Keep a notice for the user who asked for the task, with its assignee, in the inbox's
    transaction (once, however often the event is delivered). A task without an assignee or a
    requesting user has no one to tell."""
    event = delivery.event
    payload = event.payload
    if event.client_id is None:
        raise ValueError(f"event {event.event_id} has no tenant (client_id)")
    if not payload.get("persona_id") or not payload.get("user_id"):
        return
    await store.add_task_notice(
        delivery.conn,
        event.client_id,
        TaskNotice(
            task_id=str(payload["task_id"]),
            persona_id=str(payload["persona_id"]),
            user_id=str(payload["user_id"]),
            title=str(payload["title"]),
            status=str(payload["status"]),
            outcome=str(payload.get("outcome", "")),
        ),
    )


def notice_line(notice: TaskNotice) -> str:
    outcome = notice.outcome.strip()
    if len(outcome) > OUTCOME_MAX:
        outcome = outcome[:OUTCOME_MAX] + "…"
    line = f'The task "{notice.title}" {notice.status}'
    return f"{line}: {outcome}" if outcome else line
