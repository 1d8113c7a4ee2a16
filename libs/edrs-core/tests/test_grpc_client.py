"""Peer calls: deadlines, retries only for idempotent methods, the circuit breaker, and propagation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_core import errors
from edrs_core.context import acting_as, deadline_var, request_context
from edrs_core.grpc_client import (
    CircuitOpenError,
    PeerChannels,
    peer_of,
    peer_service_descriptors,
    retry_service_config,
)
from edrs_core.identity import Identity, ServiceTokens
from edrs_core.tracing import configure_tracing
from edrs_proto.integration.v1 import tools_pb2_grpc
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from opentelemetry import trace


@dataclass
class Scripted(persona_pb2_grpc.PersonaServiceServicer):
    """A persona server whose answers the test scripts: a queue of status codes, then OK."""

    failures: list[grpc.StatusCode] = field(default_factory=list)
    delay: float = 0.0
    calls: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    # Converse: the code it fails with after its first event, if any.
    converse_failure: grpc.StatusCode | None = None

    async def _answer(self, name: str, context: grpc.aio.ServicerContext) -> persona_pb2.Persona:
        self.calls.append(name)
        self.metadata.append(dict(context.invocation_metadata()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            await context.abort(self.failures.pop(0), f"scripted failure of {name}")
        return persona_pb2.Persona(id="p1", name="ok")

    async def GetPersona(self, request, context):  # noqa: N802
        return await self._answer("GetPersona", context)

    async def CreatePersona(self, request, context):  # noqa: N802
        return await self._answer("CreatePersona", context)

    async def Converse(self, request, context):  # noqa: N802 (a server-streaming method)
        self.calls.append("Converse")
        self.metadata.append(dict(context.invocation_metadata()))
        yield persona_pb2.ConverseEvent(started=persona_pb2.TurnStarted())
        if self.converse_failure is not None:
            await context.abort(self.converse_failure, "scripted failure of Converse")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    servicer = Scripted()
    srv = grpc.aio.server()
    persona_pb2_grpc.add_PersonaServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield servicer, f"127.0.0.1:{port}"
    await srv.stop(None)


@pytest.fixture
async def peers(server) -> AsyncIterator[PeerChannels]:
    _, address = server
    channels = PeerChannels(
        "caller",
        {"persona": address},
        timeout=2.0,
        breaker_threshold=3,
        service_tokens=ServiceTokens("caller", CALLER_KEY, audience="edrs-fleet"),
    )
    yield channels
    await channels.close()


CALLER_KEY = Ed25519PrivateKey.generate()


def token_claims(metadata: dict[str, str]) -> dict[str, object]:
    """The claims of the identity token a call carried, its signature checked with the caller's
    service key."""
    scheme, _, token = metadata["authorization"].partition(" ")
    assert scheme == "Bearer"
    return jwt.decode(token, CALLER_KEY.public_key(), algorithms=["EdDSA"], audience="edrs-fleet")


def stub(peers: PeerChannels) -> persona_pb2_grpc.PersonaServiceStub:
    return persona_pb2_grpc.PersonaServiceStub(peers.channel("persona"))


def test_only_methods_declared_idempotent_are_retried() -> None:
    config = retry_service_config(list(persona_pb2.DESCRIPTOR.services_by_name.values()))
    assert '"GetPersona"' in config and '"ListPersonas"' in config
    assert "CreatePersona" not in config


async def test_idempotent_call_is_retried_through_unavailable(server, peers) -> None:
    servicer, _ = server
    servicer.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    reply = await stub(peers).GetPersona(persona_pb2.GetPersonaRequest(id="p1"))
    assert reply.name == "ok"
    assert servicer.calls == ["GetPersona"] * 3


async def test_non_idempotent_call_is_not_retried(server, peers) -> None:
    servicer, _ = server
    servicer.failures = [grpc.StatusCode.UNAVAILABLE]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(peers).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == ["CreatePersona"]


async def test_every_call_gets_the_default_deadline(server) -> None:
    servicer, address = server
    servicer.delay = 1.0
    channels = PeerChannels("caller", {"persona": address}, timeout=0.2)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(channels).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await channels.close()


async def test_breaker_opens_after_repeated_peer_failures(server, peers) -> None:
    servicer, _ = server
    servicer.failures = [grpc.StatusCode.INTERNAL] * 10
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub(peers).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    with pytest.raises(CircuitOpenError) as err:
        await stub(peers).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "circuit breaker open for peer 'persona'" in err.value.details()
    assert len(servicer.calls) == 3  # the open breaker did not reach the peer


async def test_caller_errors_do_not_open_the_breaker(server, peers) -> None:
    servicer, _ = server
    servicer.failures = [grpc.StatusCode.NOT_FOUND] * 5
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(peers).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reply = await stub(peers).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    assert reply.name == "ok"


async def test_tenant_request_id_and_trace_context_travel_with_the_call(server, peers) -> None:
    servicer, _ = server
    configure_tracing("caller", None)
    tracer = trace.get_tracer("test")
    with request_context("tenant-7", "req-42"), tracer.start_as_current_span("caller.op") as span:
        await stub(peers).GetPersona(persona_pb2.GetPersonaRequest(id="p1"))
        trace_id = format(span.get_span_context().trace_id, "032x")
    seen = servicer.metadata[-1]
    # No user is behind this call (an event handler's work): the tenant travels in the caller's
    # own service token, not in a header the callee would have to believe.
    assert "x-edrs-client-id" not in seen
    claims = token_claims(seen)
    assert (claims["tid"], claims["sub"], claims["knd"]) == ("tenant-7", "caller", "service")
    assert seen["x-request-id"] == "req-42"
    assert seen["traceparent"].split("-")[1] == trace_id


async def test_streaming_calls_carry_the_tenant_and_request_id_too(server, peers) -> None:
    servicer, _ = server
    configure_tracing("caller", None)
    tracer = trace.get_tracer("test")
    with request_context("tenant-7", "req-43"), tracer.start_as_current_span("caller.op") as span:
        events = [e async for e in stub(peers).Converse(persona_pb2.ConverseRequest())]
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert [e.WhichOneof("kind") for e in events] == ["started"]
    seen = servicer.metadata[-1]
    assert (token_claims(seen)["tid"], seen["x-request-id"]) == ("tenant-7", "req-43")
    assert seen["traceparent"].split("-")[1] == trace_id


async def test_the_callers_verified_token_is_forwarded_unchanged(server, peers) -> None:
    servicer, _ = server
    caller = Identity(
        tenant_id="tenant-9", subject="u1", role="member", kind="user", expires_at=0, token="t.o.k"
    )
    with acting_as(caller):
        await stub(peers).GetPersona(persona_pb2.GetPersonaRequest(id="p1"))
        events = [e async for e in stub(peers).Converse(persona_pb2.ConverseRequest())]
    assert [e.WhichOneof("kind") for e in events] == ["started"]
    assert [m["authorization"] for m in servicer.metadata] == ["Bearer t.o.k"] * 2


async def test_a_service_token_is_signed_once_per_tenant_and_reused(server, peers) -> None:
    servicer, _ = server
    for tenant in ("tenant-1", "tenant-2", "tenant-1"):
        with request_context(tenant, None):
            await stub(peers).GetPersona(persona_pb2.GetPersonaRequest(id="p1"))
    first, second, third = (m["authorization"] for m in servicer.metadata)
    assert first == third != second


async def test_unknown_peer_is_a_clear_error(peers) -> None:
    with pytest.raises(LookupError, match="no address configured for peer 'memory'"):
        peers.channel("memory")


async def test_peer_call_never_outlives_the_incoming_calls_deadline(server) -> None:
    servicer, address = server
    servicer.delay = 2.0
    channels = PeerChannels("caller", {"persona": address}, timeout=30.0)
    # As the server interceptor does for a call that arrived with 0.2 s left:
    token = deadline_var.set(time.monotonic() + 0.2)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(channels).CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        deadline_var.reset(token)
        await channels.close()


# The typed stub: the way services call each other (PeerChannels.stub).


async def test_a_stub_call_goes_through_the_peer_channel_and_answers(server, peers) -> None:
    servicer, _ = server
    with request_context("tenant-7", "req-44"):
        reply = await peers.stub(persona_pb2_grpc.PersonaServiceStub).GetPersona(
            persona_pb2.GetPersonaRequest(id="p1")
        )
    assert reply.name == "ok"
    # The tenant travels as the tid of the signed token (the header is no longer believed).
    assert token_claims(servicer.metadata[-1])["tid"] == "tenant-7"


async def test_a_stub_call_that_fails_raises_the_mapped_service_error(server, peers) -> None:
    servicer, _ = server
    servicer.failures = [grpc.StatusCode.NOT_FOUND]
    with pytest.raises(errors.NotFound) as err:
        await peers.stub(persona_pb2_grpc.PersonaServiceStub).CreatePersona(
            persona_pb2.CreatePersonaRequest(name="x")
        )
    assert err.value.message == "scripted failure of CreatePersona"
    assert err.value.peer == "persona"


async def test_stub_calls_keep_the_retries_and_the_breaker_of_the_channel(server, peers) -> None:
    servicer, _ = server
    persona = peers.stub(persona_pb2_grpc.PersonaServiceStub)
    servicer.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    assert (await persona.GetPersona(persona_pb2.GetPersonaRequest(id="p1"))).name == "ok"
    assert servicer.calls == ["GetPersona"] * 3  # idempotent: retried
    servicer.failures = [grpc.StatusCode.INTERNAL] * 10
    for _ in range(3):
        with pytest.raises(errors.Internal, match="the persona service failed"):
            await persona.CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    with pytest.raises(errors.Unavailable) as err:
        await persona.CreatePersona(persona_pb2.CreatePersonaRequest(name="x"))
    assert "the persona service is unavailable" in err.value.message
    assert "circuit breaker open for peer 'persona'" in err.value.message
    assert len(servicer.calls) == 3 + 3  # the open breaker did not reach the peer


async def test_a_stub_call_out_of_time_is_deadline_exceeded(server) -> None:
    servicer, address = server
    servicer.delay = 1.0
    channels = PeerChannels("caller", {"persona": address}, timeout=0.2)
    try:
        with pytest.raises(errors.DeadlineExceeded, match="the persona service did not answer"):
            await channels.stub(persona_pb2_grpc.PersonaServiceStub).CreatePersona(
                persona_pb2.CreatePersonaRequest(name="x")
            )
    finally:
        await channels.close()


async def test_a_streaming_stub_call_maps_a_failure_while_iterating(server, peers) -> None:
    servicer, _ = server
    servicer.converse_failure = grpc.StatusCode.FAILED_PRECONDITION
    events = []
    with pytest.raises(errors.FailedPrecondition) as err:
        async for event in peers.stub(persona_pb2_grpc.PersonaServiceStub).Converse(
            persona_pb2.ConverseRequest()
        ):
            events.append(event.WhichOneof("kind"))
    assert events == ["started"]  # what came before the failure was delivered
    assert err.value.message == "scripted failure of Converse"
    servicer.converse_failure = grpc.StatusCode.RESOURCE_EXHAUSTED
    call = peers.stub(persona_pb2_grpc.PersonaServiceStub).Converse(persona_pb2.ConverseRequest())
    assert (await call.read()).WhichOneof("kind") == "started"
    with pytest.raises(errors.ResourceExhausted):
        await call.read()


async def test_a_stub_for_a_peer_without_an_address_fails_only_when_called(peers) -> None:
    memory = peers.stub(memory_pb2_grpc.MemoryServiceStub)  # a service may start without it
    with pytest.raises(errors.PeerNotConfigured, match="no address configured for peer 'memory'"):
        await memory.Recall(memory_pb2.RecallRequest())
    with pytest.raises(errors.PeerNotConfigured, match="no address configured for peer 'memory'"):
        peers.stub(memory_pb2_grpc.MemoryServiceStub, required=True)  # fails start-up instead


def test_a_peers_idempotent_rpcs_of_every_service_file_are_retried() -> None:
    names = {s.full_name for s in peer_service_descriptors("integration")}
    assert names >= {"edrs.integration.v1.IntegrationService", "edrs.integration.v1.ToolService"}
    config = json.loads(retry_service_config(peer_service_descriptors("integration")))
    retried = {(n["service"], n["method"]) for n in config["methodConfig"][0]["name"]}
    assert ("edrs.integration.v1.ToolService", "ListTools") in retried
    assert ("edrs.integration.v1.ToolService", "CallTool") not in retried


def test_the_peer_of_a_stub_is_read_from_its_module() -> None:
    assert peer_of(persona_pb2_grpc.PersonaServiceStub) == "persona"
    assert peer_of(memory_pb2_grpc.MemoryServiceStub) == "memory"
    # A further service file of an area belongs to the same peer.
    assert peer_of(tools_pb2_grpc.ToolServiceStub) == "integration"
    with pytest.raises(ValueError, match="pass peer="):
        peer_of(dict)


async def test_a_stub_is_made_once_per_class(peers) -> None:
    stub_class = persona_pb2_grpc.PersonaServiceStub
    assert peers.stub(stub_class) is peers.stub(stub_class)


class Uploads(reasoning_pb2_grpc.ReasoningServiceServicer):
    """A reasoning server whose Transcribe (client-streaming) counts the bytes it was sent."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.time_remaining: list[float | None] = []

    async def Transcribe(self, request_iterator, context):  # noqa: N802
        self.metadata.append(dict(context.invocation_metadata()))
        self.time_remaining.append(context.time_remaining())
        size = sum([len(r.audio) async for r in request_iterator])
        return reasoning_pb2.TranscribeResponse(text=f"{size} bytes")


async def test_client_streaming_calls_carry_the_tenant_request_id_and_deadline_too() -> None:
    servicer = Uploads()
    srv = grpc.aio.server()
    reasoning_pb2_grpc.add_ReasoningServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    channels = PeerChannels(
        "caller",
        {"reasoning": f"127.0.0.1:{port}"},
        timeout=30.0,
        service_tokens=ServiceTokens("caller", CALLER_KEY, audience="edrs-fleet"),
    )
    try:

        async def upload() -> AsyncIterator[reasoning_pb2.TranscribeRequest]:
            yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig())
            for _ in range(3):
                yield reasoning_pb2.TranscribeRequest(audio=b"\0" * 1000)

        with request_context("tenant-8", "req-44"):
            stub = channels.stub(reasoning_pb2_grpc.ReasoningServiceStub)
            result = await stub.Transcribe(upload())
        assert result.text == "3000 bytes"
        seen = servicer.metadata[-1]
        # The tenant travels as the tid of the signed token (the header is no longer believed).
        assert (token_claims(seen)["tid"], seen["x-request-id"]) == ("tenant-8", "req-44")
        # The channel's default deadline (30 s: ample on a loaded CI machine) is on the call. The
        # server's reading of it is not exact: time_remaining() was seen at 30.0995 on a loaded
        # machine, so a second of slack; a call without this deadline reports none at all.
        remaining = servicer.time_remaining[-1]
        assert remaining is not None and 0 < remaining <= 31.0
    finally:
        await channels.close()
        await srv.stop(None)
