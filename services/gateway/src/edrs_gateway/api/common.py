"""What routes share for their OpenAPI documentation and lists: error responses and page parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from edrs_core.errors import ServiceError
from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import ServerSentEvent

from edrs_gateway.api.problems import PROBLEM_JSON, ApiError, problem_body, problem_of


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is answered."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://edrs.dev/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "user 0190d6a0-0000-7000-8000-000000000000 not found",
                    "code": "not_found",
                    "instance": "/api/v1/users/0190d6a0-0000-7000-8000-000000000000",
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, documented error code")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    limit: int | None = Field(
        default=None, description="413 only: the largest body the route accepts, in bytes"
    )


_DESCRIPTIONS = {
    400: "The request is malformed",
    401: "No valid access token (see `WWW-Authenticate`)",
    403: "The caller's role does not allow this",
    404: "No such object in the caller's tenant",
    409: "Conflicts with the current state (e.g. a duplicate)",
    413: "The body is too large; `limit` says how large it may be, in bytes",
    415: "The body's media type is not one the route takes",
    422: "The request failed validation; `errors` points at each bad field",
    429: "Rate limit exceeded; retry after `Retry-After` seconds",
    504: "The request took longer than the gateway's time limit",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status documented as problem+json."""
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


# What every authenticated route can answer, whatever it does.
AUTHENTICATED = (401, 403, 422, 429)


@dataclass(frozen=True)
class PageRequest:
    page_size: int
    page_token: str


async def page_request(
    page_size: Annotated[
        int, Query(alias="pageSize", ge=1, le=200, description="Items per page (default 50)")
    ] = 50,
    page_token: Annotated[
        str,
        Query(
            alias="pageToken", max_length=500, description="`nextPageToken` of the previous page"
        ),
    ] = "",
) -> PageRequest:
    return PageRequest(page_size, page_token)


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


def not_found(kind: str, object_id: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {object_id} not found")


def sse_response(events: tuple[str, ...], data: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `200` of a route answering `text/event-stream`: one event as the schema, its
    `event` one of `events` plus `error`, its `data` JSON text (`data` says what it holds)."""
    schema = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": [*events, "error"]},
            "data": {"type": "string", "contentMediaType": "application/json", "description": data},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }
    return {200: {"content": {"text/event-stream": {"schema": schema}}}}


def sse_error(error: ServiceError) -> ServerSentEvent:
    """The `error` event ending a stream whose watch failed: its data the problem (RFC 9457) a
    response would have carried."""
    return ServerSentEvent(data=json.dumps(problem_body(problem_of(error))), event="error")


__all__ = [
    "AUTHENTICATED",
    "PageRequest",
    "Problem",
    "not_found",
    "page_request",
    "problem_responses",
    "sse_error",
    "sse_response",
    "upstream_responses",
]


def client_ip(request: Request) -> str | None:
    """The peer address of the request, for the audit log."""
    return request.client.host if request.client else None
