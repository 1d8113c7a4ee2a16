"""Asks the persona service, which owns personas, whether an assignee exists in the caller's tenant,
and which personas (with their skills) may take work."""

from __future__ import annotations

from uuid import UUID

from edrs_core import FailedPrecondition, NotFound, Unavailable
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

from edrs_task.decomposition import Candidate


class PersonaDirectory:
    """GetPersona on the persona peer's stub (edrs_core: the tenant, request id and trace context
    of the current call, its deadline, retries, the breaker, and the peer's errors mapped)."""

    def __init__(self, persona: persona_pb2_grpc.PersonaServiceAsyncStub) -> None:
        self.persona = persona

    async def ensure_exists(self, persona_id: UUID, field: str) -> None:
        """FailedPrecondition naming `field` when the persona does not exist in the tenant;
        Unavailable when the persona service cannot answer (in time)."""
        try:
            await self.persona.GetPersona(persona_pb2.GetPersonaRequest(id=str(persona_id)))
        except NotFound:
            # For a task, an assignee that does not exist is a precondition of the task, not a
            # missing object of the call.
            raise FailedPrecondition(
                f"{field} {persona_id} does not exist (no such persona in this tenant)",
                field=field,
            ) from None
        except Unavailable as exc:  # DeadlineExceeded too
            raise Unavailable(
                f"cannot check {field}: the persona service did not answer ({exc.message}); "
                "retry later",
                peer=exc.peer,
            ) from exc

    async def candidates(self) -> list[Candidate]:
        """The tenant's active personas, every page, as assignment candidates."""
        found: list[Candidate] = []
        token = ""
        while True:
            request = persona_pb2.ListPersonasRequest()
            request.page.page_size = 200
            request.page.page_token = token
            page = await self.persona.ListPersonas(request)
            found += [Candidate(UUID(p.id), p.name, tuple(p.skills)) for p in page.personas]
            token = page.page.next_page_token
            if not token:
                return found
