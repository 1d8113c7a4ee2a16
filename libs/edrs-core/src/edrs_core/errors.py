"""Domain errors that services raise and the gRPC layer turns into status codes with a clear message."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error meant for the caller: its message crosses the wire as the status details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class PeerNotConfigured(Unavailable, LookupError):
    """A call to a peer whose address the PEERS setting does not give: a deployment mistake, so
    callers answer UNAVAILABLE (503) and the message names the setting to fix."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(message)
        self.peer = peer
