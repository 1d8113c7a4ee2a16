"""Calling fleet services from routes: the caller's tenant on every call, gRPC status → HTTP problem."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from edrs_core.context import request_context, request_id_var

from edrs_gateway.api.common import Problem
from edrs_gateway.api.problems import PROBLEM_JSON, ApiError
from edrs_gateway.auth.principal import Principal

log = logging.getLogger("edrs.gateway.api")


@dataclass(frozen=True)
class HttpMapping:
    status: int
    code: str
    # 4xx: the service's message tells the client what to fix, so it is passed on. 5xx: the
    # message describes the fleet's insides, so the client gets a fixed sentence and it is logged.
    pass_detail: bool


# The one mapping from gRPC status to HTTP status and problem code for every route.
GRPC_TO_HTTP: dict[grpc.StatusCode, HttpMapping] = {
    grpc.StatusCode.NOT_FOUND: HttpMapping(404, "not_found", True),
    grpc.StatusCode.INVALID_ARGUMENT: HttpMapping(422, "validation_failed", True),
    grpc.StatusCode.OUT_OF_RANGE: HttpMapping(422, "validation_failed", True),
    grpc.StatusCode.ALREADY_EXISTS: HttpMapping(409, "conflict", True),
    grpc.StatusCode.FAILED_PRECONDITION: HttpMapping(409, "failed_precondition", True),
    grpc.StatusCode.ABORTED: HttpMapping(409, "conflict", True),
    grpc.StatusCode.PERMISSION_DENIED: HttpMapping(403, "forbidden", True),
    grpc.StatusCode.UNAUTHENTICATED: HttpMapping(401, "unauthenticated", True),
    grpc.StatusCode.RESOURCE_EXHAUSTED: HttpMapping(429, "resource_exhausted", True),
    grpc.StatusCode.UNAVAILABLE: HttpMapping(503, "upstream_unavailable", False),
    grpc.StatusCode.DEADLINE_EXCEEDED: HttpMapping(504, "upstream_timeout", False),
}
UPSTREAM_ERROR = HttpMapping(502, "upstream_error", False)

# Seconds a client should wait before retrying a call the fleet could not serve.
RETRY_AFTER_SECONDS = 1

_FIXED_DETAIL = {
    503: "the {peer} service is unavailable; try again shortly",
    504: "the {peer} service did not answer in time; try again shortly",
    502: "the {peer} service failed; quote the request id when reporting it",
}


# Every List RPC refuses a foreign cursor with this field (edrs_core.pagination); clients know
# it as the `pageToken` query parameter.
_PAGE_TOKEN_FIELD = "page.page_token"


def api_error(error: grpc.aio.AioRpcError, peer: str) -> ApiError:
    """The problem a client sees for a failed call to `peer`."""
    code = error.code()
    mapping = GRPC_TO_HTTP.get(code, UPSTREAM_ERROR)
    message = error.details() or code.name
    if code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(_PAGE_TOKEN_FIELD):
        detail = message.replace(_PAGE_TOKEN_FIELD, "pageToken", 1)
        return ApiError(
            422,
            "invalid_page_token",
            detail,
            errors=[{"in": "query", "pointer": "/pageToken", "detail": detail}],
        )
    if mapping.pass_detail:
        detail = message
    else:
        detail = _FIXED_DETAIL[mapping.status].format(peer=peer)
        log.warning("call to %s failed with %s: %s", peer, code.name, message)
    headers = {}
    if mapping.status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return ApiError(mapping.status, mapping.code, detail, headers=headers)


@contextmanager
def calling(peer: str, principal: Principal) -> Iterator[None]:
    """Make gRPC calls to `peer` on behalf of `principal`: start them inside this block.

    The edrs_core client interceptor reads the bound context when a call starts, so each call
    carries the principal's tenant as `x-edrs-client-id` (never a value the client sent), the
    request id, the trace context and a deadline. A failed call leaves as an ApiError.

        with calling("persona", principal):
            persona = await stub.GetPersona(request)
    """
    with request_context(principal.tenant_id, request_id_var.get()):
        try:
            yield
        except grpc.aio.AioRpcError as error:
            raise api_error(error, peer) from None


def upstream_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries of a route that calls a fleet service."""
    descriptions = {
        502: "A service behind the gateway failed",
        503: "A service behind the gateway is unavailable; retry after `Retry-After` seconds",
        504: "A service behind the gateway did not answer in time",
    }
    return {
        status: {
            "model": Problem,
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, description in descriptions.items()
    }
