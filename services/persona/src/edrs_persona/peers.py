"""The persona service's peers (memory, reasoning): stubs made on first use, and their failures
turned into statuses that name the peer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from edrs_core import ServiceError
from edrs_core.grpc_client import PeerChannels
from edrs_proto.memory.v1 import memory_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc

# A peer's answer about the request itself keeps its code; anything else is the peer's failure.
_PASSED_THROUGH = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class PeerError(ServiceError):
    """A failed call to a peer, carried to our caller with the peer's name."""

    def __init__(self, peer: str, code: grpc.StatusCode, details: str) -> None:
        if code in _PASSED_THROUGH:
            message = f"{peer}: {details}"
        elif code == grpc.StatusCode.UNAVAILABLE:
            message = f"the {peer} service is unavailable: {details}"
        else:
            message = f"the {peer} service failed ({code.name}): {details}"
            code = grpc.StatusCode.UNAVAILABLE if code == grpc.StatusCode.UNKNOWN else code
        super().__init__(message)
        self.code = code
        self.peer = peer


@contextmanager
def calling(peer: str) -> Iterator[None]:
    """Turn a failed gRPC call to `peer` into a PeerError for our own caller."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise PeerError(peer, exc.code(), exc.details() or "") from None


class Peers:
    def __init__(self, channels: PeerChannels) -> None:
        self.channels = channels
        self._memory: memory_pb2_grpc.MemoryServiceStub | None = None
        self._reasoning: reasoning_pb2_grpc.ReasoningServiceStub | None = None

    def _channel(self, peer: str) -> grpc.aio.Channel:
        # A peer missing from PEERS raises PeerNotConfigured: UNAVAILABLE, naming the setting.
        return self.channels.channel(peer)

    @property
    def memory(self) -> memory_pb2_grpc.MemoryServiceStub:
        if self._memory is None:
            self._memory = memory_pb2_grpc.MemoryServiceStub(self._channel("memory"))
        return self._memory

    @property
    def reasoning(self) -> reasoning_pb2_grpc.ReasoningServiceStub:
        if self._reasoning is None:
            self._reasoning = reasoning_pb2_grpc.ReasoningServiceStub(self._channel("reasoning"))
        return self._reasoning
