"""The one mapping of a peer's gRPC status to the error our own caller gets (edrs_core.peer_error)."""

from __future__ import annotations

import grpc
import pytest
from edrs_core import errors
from edrs_core.errors import peer_error

# A peer's answer about the request: the matching error, the peer's message unchanged.
ABOUT_THE_REQUEST = [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.OUT_OF_RANGE, errors.OutOfRange),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    (grpc.StatusCode.ABORTED, errors.Aborted),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
]


@pytest.mark.parametrize(("code", "cls"), ABOUT_THE_REQUEST, ids=lambda v: getattr(v, "name", ""))
def test_a_request_error_keeps_its_code_and_the_peers_message(code, cls) -> None:
    error = peer_error("memory", code, "persona_id 42 is not a UUID")
    assert type(error) is cls
    assert error.code == code
    assert error.message == "persona_id 42 is not a UUID"
    assert error.peer == "memory"
    # Passed on to our own caller, it says which service said it.
    assert error.details == "memory: persona_id 42 is not a UUID"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_peer_that_cannot_serve_is_unavailable_naming_it(code) -> None:
    error = peer_error("reasoning", code, "failed to connect to all addresses")
    assert type(error) is errors.Unavailable
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == (
        f"the reasoning service is unavailable ({code.name}: failed to connect to all addresses)"
    )
    assert error.peer == "reasoning"
    assert error.details == error.message  # already names the peer


def test_a_peer_out_of_time_is_deadline_exceeded_and_a_kind_of_unavailable() -> None:
    error = peer_error("persona", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert type(error) is errors.DeadlineExceeded
    assert isinstance(error, errors.Unavailable)  # `except Unavailable` catches a timeout too
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.message == (
        "the persona service did not answer in time (DEADLINE_EXCEEDED: Deadline Exceeded)"
    )


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    ],
)
def test_a_peers_own_failure_is_internal_naming_it_and_its_status(code) -> None:
    error = peer_error("task", code, "internal error (request id r-1)")
    assert type(error) is errors.Internal
    assert error.code == grpc.StatusCode.INTERNAL
    assert (
        error.message == f"the task service failed ({code.name}: internal error (request id r-1))"
    )
    assert error.peer == "task"


def test_every_status_but_ok_is_mapped_to_a_service_error_naming_the_peer() -> None:
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        error = peer_error("knowledge", code, "x")
        assert isinstance(error, errors.ServiceError), code
        assert error.peer == "knowledge", code


def test_an_empty_message_is_replaced_by_the_status_name() -> None:
    assert peer_error("memory", grpc.StatusCode.NOT_FOUND, "").message == "NOT_FOUND"


def test_a_local_error_names_no_peer() -> None:
    error = errors.NotFound("persona 1 not found")
    assert error.peer is None
    assert error.details == "persona 1 not found"
