"""Domain errors that services raise and the gRPC layer turns into status codes with a clear message."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error meant for the caller: its message crosses the wire as the status details.

    `peer` names the service whose answer this is, when it came from a call to another service
    (see `peer_error`); None for an error raised here. `details` is what our own caller reads in
    the status: the message, prefixed with the peer's name when the peer's words are passed on
    (`memory: fact 42 not found`), so a message always says which service said it."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None, peer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.peer = peer
        self.details = message


class Internal(ServiceError):
    """Something failed that the caller cannot fix: a bug, or a peer that failed that way."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfRange(InvalidArgument):
    code = grpc.StatusCode.OUT_OF_RANGE


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


class DeadlineExceeded(Unavailable):
    """A peer did not answer in time. A kind of Unavailable (the peer could not serve us, and
    `except Unavailable` catches it), kept apart so the status stays DEADLINE_EXCEEDED and the
    gateway answers 504 rather than 503."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PeerNotConfigured(Unavailable, LookupError):
    """A call to a peer whose address the PEERS setting does not give: a deployment mistake, so
    callers answer UNAVAILABLE (503) and the message names the setting to fix."""

    peer: str

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(message, peer=peer)


# A peer's answer about the request itself: the caller gets the same error, with the peer's message
# unchanged (it names the bad field or the missing object, which is what the caller must fix).
_ABOUT_THE_REQUEST: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def peer_error(peer: str, code: grpc.StatusCode, details: str) -> ServiceError:
    """The one mapping of a failed call to `peer` (its status `code` and `details`) to the error
    our own caller gets. Every ServiceError it returns has `peer` set.

    - a status about the request (NOT_FOUND, INVALID_ARGUMENT, ...) becomes the matching error
      carrying the peer's message unchanged (and `details`, passed on to our caller if the error
      is, prefixed with the peer's name);
    - UNAVAILABLE (the peer is down, refused the connection, its breaker is open) and CANCELLED
      (it went away mid-call) become Unavailable naming the peer;
    - DEADLINE_EXCEEDED becomes DeadlineExceeded (an Unavailable) naming the peer;
    - anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS) is the peer's failure: Internal
      naming the peer and its status.
    """
    details = details or code.name
    request_error = _ABOUT_THE_REQUEST.get(code)
    if request_error is not None:
        error = request_error(details, peer=peer)
        error.details = f"{peer}: {details}"
        return error
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return Unavailable(f"the {peer} service is unavailable ({code.name}: {details})", peer=peer)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"the {peer} service did not answer in time ({code.name}: {details})", peer=peer
        )
    return Internal(f"the {peer} service failed ({code.name}: {details})", peer=peer)
