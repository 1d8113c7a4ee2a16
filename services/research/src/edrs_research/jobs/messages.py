"""What the research workflow passes to its activities (Temporal payloads: plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

RESEARCH_JOB = "ResearchJob"


def workflow_id(job_id: str) -> str:
    return f"research-job:{job_id}"


@dataclass(frozen=True)
class JobRef:
    client_id: str
    job_id: str


@dataclass(frozen=True)
class JobEnd:
    client_id: str
    job_id: str
    state: str
    reason: str
