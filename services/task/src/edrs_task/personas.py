"""Asks the persona service, which owns personas, whether an assignee exists in the caller's tenant."""

from __future__ import annotations

from uuid import UUID

import grpc
from edrs_core import FailedPrecondition, Unavailable
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

_PEER_DOWN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class PersonaDirectory:
    """GetPersona on the persona peer channel. The edrs_core client interceptor adds the tenant,
    request id and trace context of the current call, its deadline (capped by what is left of the
    incoming call's), retries and the circuit breaker."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = persona_pb2_grpc.PersonaServiceStub(channel)

    async def ensure_exists(self, persona_id: UUID, field: str) -> None:
        """FailedPrecondition naming `field` when the persona does not exist in the tenant;
        Unavailable when the persona service cannot answer in time."""
        try:
            await self.stub.GetPersona(persona_pb2.GetPersonaRequest(id=str(persona_id)))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise FailedPrecondition(
                    f"{field} {persona_id} does not exist (no such persona in this tenant)",
                    field=field,
                ) from None
            if exc.code() in _PEER_DOWN:
                raise Unavailable(
                    f"cannot check {field}: the persona service did not answer "
                    f"({exc.code().name}: {exc.details()}); retry later"
                ) from None
            raise
