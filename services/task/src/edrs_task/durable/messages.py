"""What the workflows and activities pass each other (Temporal serialises these dataclasses as
JSON). Pure data: the workflow sandbox imports it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

WORKFLOW_RUN = "edrs.WorkflowRun"
APPROVAL_WAIT = "edrs.ApprovalWait"
DECIDE_SIGNAL = "decide"
# Ids derived from a Temporal workflow id (scheduled and child runs) or a tenant's key (approvals)
# are UUIDv5 in this namespace, so every retry of the derivation gives the same id.
ID_NAMESPACE = uuid.UUID("4f0c2f4e-6b1e-5a8e-9d1a-1c3e5f7a9b2d")


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


@dataclass
class RunInput:
    client_id: str
    # "" for a run started by a schedule or as a sub-workflow: derived from the workflow id.
    run_id: str
    workflow_name: str
    # 0: the latest version when the run starts.
    workflow_version: int
    input: dict[str, Any]
    attempt: int = 1
    # Outputs of steps that succeeded in an earlier attempt (RetryRun): not run again.
    reuse: dict[str, Any] = field(default_factory=dict)
    schedule_id: str = ""
    parent_run_id: str = ""
    heartbeat_seconds: float = 10.0


@dataclass
class Prepared:
    run_id: str
    spec: dict[str, Any]


@dataclass
class StepCall:
    client_id: str
    run_id: str
    step_id: str
    # model_call, knowledge_search or tool_call.
    type: str
    params: dict[str, Any]
    # "step", or "compensation" for the undo of a completed step.
    kind: str = "step"


@dataclass
class StepReport:
    client_id: str
    run_id: str
    step_id: str
    status: str
    output: dict[str, Any] | None = None
    error: str = ""
    started: bool = False


@dataclass
class RunReport:
    client_id: str
    run_id: str
    status: str
    output: dict[str, Any] | None = None
    error: str = ""


@dataclass
class ApprovalAsk:
    client_id: str
    approval_id: str
    idempotency_key: str
    role: str
    title: str
    details: dict[str, Any]
    on_expiry: str
    # ISO 8601, computed from the workflow's clock so the timer and the row agree.
    expires_at: str
    requested_by: str
    run_id: str = ""
    step_id: str = ""


@dataclass
class Decision:
    approval_id: str
    # approved, rejected or expired
    status: str
    decided_by: str
    comment: str = ""
