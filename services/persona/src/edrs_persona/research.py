"""A user who asks a persona to research something starts a research job for it.

Only a clear, explicit request counts (a 135M model cannot be trusted to decide): a message that
starts with "research" followed by the question, e.g. "Research: what propels the Orion probe?" or
"Please research what propels the Orion probe". The job runs in the research service for the
persona (its knowledge collections, or the web when it has none; its budgets; a task assigned to
it), the turn's reply says so, and the job's task completion reaches the user's next turn with
the persona (task_notices.py). Without a research service address nothing is started."""

from __future__ import annotations

import logging
import re

from edrs_core import ServiceError
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc

from edrs_persona.store import Persona

log = logging.getLogger("edrs.persona.research")

_REQUEST = re.compile(
    r"^\s*(?:please\s+|can\s+you\s+|could\s+you\s+)?research(?:\s*:\s*|\s+)(?P<question>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
MIN_QUESTION, MAX_QUESTION = 3, 2000


def research_question(text: str) -> str | None:
    """The question of an explicit research request, or None."""
    match = _REQUEST.match(text)
    if match is None:
        return None
    question = match.group("question").strip()
    if not MIN_QUESTION <= len(question) <= MAX_QUESTION:
        return None
    return question


class ResearchRequests:
    def __init__(self, research: research_pb2_grpc.ResearchServiceAsyncStub | None) -> None:
        self.research = research

    async def start(self, persona: Persona, text: str) -> str | None:
        """What to tell the user when `text` asks for research (started, or why not); None when
        it does not ask, or the fleet has no research service."""
        question = research_question(text)
        if question is None or self.research is None:
            return None
        collections = [str(c) for c in persona.knowledge_collections]
        scope = research_pb2.ResearchScope(collections=collections, web=not collections)
        try:
            job = await self.research.StartJob(
                research_pb2.StartJobRequest(
                    question=question, scope=scope, persona_id=str(persona.id)
                )
            )
        except ServiceError as exc:
            log.info("research for persona %s not started: %s", persona.id, exc.details)
            return f'I could not start research on "{question}": {exc.details}'
        return (
            f'I started researching "{question}" (research job {job.id}); '
            "I will tell you what I find when it is done."
        )
