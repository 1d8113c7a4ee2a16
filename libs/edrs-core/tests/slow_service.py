"""A minimal service for runtime tests: GetPersona sleeps for `id` seconds, then answers; with
`id` "hold" it answers once the process gets SIGUSR1 (the test decides when)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import ClassVar

from edrs_core import GrpcService, Runtime, ServiceDefinition, ServiceSettings, run_service
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from pydantic_settings import SettingsConfigDict


class SlowSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_SLOW_")
    service_name: ClassVar[str] = "slow"


class SlowServicer(persona_pb2_grpc.PersonaServiceServicer):
    async def GetPersona(self, request, context):  # noqa: N802
        # Tests wait for this line to know the call is in flight.
        logging.getLogger("slow").info("call in flight: %s", request.id)
        if request.id == "hold":
            released = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, released.set)
            await released.wait()
        else:
            await asyncio.sleep(float(request.id))
        return persona_pb2.Persona(id=request.id, name="finished")


def build(rt: Runtime) -> list[GrpcService]:
    return [
        GrpcService(
            "edrs.persona.v1.PersonaService",
            SlowServicer(),
            persona_pb2_grpc.add_PersonaServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(settings_cls=SlowSettings, build=build)

if __name__ == "__main__":
    run_service(definition)
