"""One error mapping in the gateway: a ServiceError raised anywhere under a route (the gateway's own
store, or a peer's status as edrs_core maps it) becomes problem+json with a stable code, with no
wrapper in the route."""

from __future__ import annotations

import json
import logging

import grpc
import httpx
import pytest
from edrs_core import errors
from edrs_core.context import request_context
from edrs_gateway.api.common import sse_error
from edrs_gateway.api.problems import install_problem_handlers, problem_of
from fastapi import FastAPI

PROBLEM = "application/problem+json"


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        raise error

    return app


async def get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get("/thing")


async def test_a_route_raising_a_service_error_answers_problem_json_without_a_wrapper() -> None:
    reply = await get(app_raising(errors.NotFound("persona 42 not found", peer="persona")))
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith(PROBLEM)
    assert reply.json() == {
        "type": "https://edrs.dev/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "persona 42 not found",
        "code": "not_found",
        "instance": "/thing",
    }


async def test_a_peer_that_is_down_is_503_naming_it_and_nothing_of_the_fleet(caplog) -> None:
    error = errors.peer_error(
        "reasoning", grpc.StatusCode.UNAVAILABLE, "failed to connect to 10.0.0.7:50054"
    )
    with caplog.at_level(logging.WARNING, "edrs.gateway.api"):
        reply = await get(app_raising(error))
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    body = reply.json()
    assert (body["code"], body["detail"]) == (
        "upstream_unavailable",
        "the reasoning service is unavailable; try again shortly",
    )
    assert "10.0.0.7" not in reply.text
    assert "10.0.0.7" in caplog.text  # the operator still learns what happened


async def test_a_local_bug_is_500_internal_error() -> None:
    reply = await get(app_raising(errors.Internal("the audit row has no actor")))
    assert reply.status_code == 500
    assert reply.json()["code"] == "internal_error"
    assert "audit row" not in reply.text


# Every status a ServiceError can carry: (HTTP status, code) for a peer's and for a local error.
EXPECTED = {
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.INVALID_ARGUMENT: (422, "validation_failed"),
    grpc.StatusCode.OUT_OF_RANGE: (422, "validation_failed"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "resource_exhausted"),
    grpc.StatusCode.UNAVAILABLE: (503, "upstream_unavailable"),
    grpc.StatusCode.CANCELLED: (503, "upstream_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "upstream_timeout"),
    grpc.StatusCode.INTERNAL: (502, "upstream_error"),
    grpc.StatusCode.UNKNOWN: (502, "upstream_error"),
    grpc.StatusCode.UNIMPLEMENTED: (502, "upstream_error"),
    grpc.StatusCode.DATA_LOSS: (502, "upstream_error"),
}


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda c: c.name)
def test_each_peer_status_has_its_problem(code: grpc.StatusCode) -> None:
    problem = problem_of(errors.peer_error("persona", code, "what the persona service said"))
    assert (problem.status, problem.code) == EXPECTED[code]
    if problem.status < 500:
        assert problem.detail == "what the persona service said"
    else:
        assert problem.detail.startswith("the persona service ")
        assert "what the persona service said" not in problem.detail


def test_every_status_but_ok_is_covered() -> None:
    assert set(EXPECTED) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_a_foreign_page_token_is_invalid_page_token_from_a_peer_or_a_store() -> None:
    local = errors.InvalidArgument(
        "page.page_token is not a token this service issued", field="page.page_token"
    )
    remote = errors.peer_error(
        "persona",
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token is not a token this service issued",
    )
    for error in (local, remote):
        problem = problem_of(error)
        assert (problem.status, problem.code) == (422, "invalid_page_token")
        assert problem.detail == "pageToken is not a token this service issued"
        assert problem.errors == [
            {"in": "query", "pointer": "/pageToken", "detail": problem.detail}
        ]


def test_a_local_invalid_argument_points_at_its_field() -> None:
    problem = problem_of(errors.InvalidArgument("email is not an address", field="email"))
    assert (problem.status, problem.code) == (422, "validation_failed")
    assert problem.errors == [
        {"in": "body", "pointer": "/email", "detail": "email is not an address"}
    ]


def test_a_missing_peer_address_is_503_naming_the_peer() -> None:
    problem = problem_of(errors.PeerNotConfigured("memory", "no address configured for 'memory'"))
    assert (problem.status, problem.code) == (503, "upstream_unavailable")
    assert problem.detail == "the memory service is unavailable; try again shortly"
    assert problem.headers == {"Retry-After": "1"}


async def test_the_problem_carries_the_request_id() -> None:
    app = app_raising(errors.FailedPrecondition("persona 42 is archived", peer="persona"))
    with request_context(None, "req-7"):
        reply = await get(app)
    assert reply.status_code == 409
    assert reply.json()["requestId"] == "req-7"


def test_a_failed_watch_ends_its_event_stream_with_the_problem_a_response_would_carry() -> None:
    """The SSE routes (a run's steps, a research job) end with an `error` event whose data is the
    same RFC 9457 problem the error gives as a response: code, status, title, detail."""
    event = sse_error(errors.NotFound("run 7 not found"))
    assert event.event == "error"
    body = json.loads(event.data)
    assert body["status"] == 404 and body["code"] == "not_found"
    assert body["detail"] == "run 7 not found"
    assert body["type"] == "https://edrs.dev/problems/not-found" and body["title"]
