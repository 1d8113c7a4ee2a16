"""RFC 9457 problem details: every error is `application/problem+json` with a stable `code`. Routes
raise ApiError, or let a ServiceError (their own store's, or a peer's as edrs_core maps it) reach
the one handler that turns it into a problem (`problem_of`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from edrs_core.context import request_id_var
from edrs_core.errors import PeerNotConfigured, ServiceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("edrs.gateway.api")

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error for the client. `code` is stable and documented; `detail` is for humans."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.errors = errors or []
        self.headers = headers or {}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    """`extensions`: further members of the problem (RFC 9457 §3.2), e.g. a 413's `limit`."""
    error = ApiError(status, code, detail, title=title, errors=errors)
    body = {**problem_body(error, instance), **(extensions or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_body(error: ApiError, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 body of `error`: for responses, SSE `error` events and WebSocket frames."""
    body: dict[str, Any] = {
        "type": f"https://edrs.dev/problems/{error.code.replace('_', '-')}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if instance:
        body["instance"] = instance
    if error.errors:
        body["errors"] = error.errors
    if (rid := request_id_var.get()) is not None:
        body["requestId"] = rid
    return body


@dataclass(frozen=True)
class _HttpMapping:
    status: int
    code: str


# The one mapping from a ServiceError's status to HTTP status and problem code.
_HTTP: dict[grpc.StatusCode, _HttpMapping] = {
    grpc.StatusCode.NOT_FOUND: _HttpMapping(404, "not_found"),
    grpc.StatusCode.INVALID_ARGUMENT: _HttpMapping(422, "validation_failed"),
    grpc.StatusCode.OUT_OF_RANGE: _HttpMapping(422, "validation_failed"),
    grpc.StatusCode.ALREADY_EXISTS: _HttpMapping(409, "already_exists"),
    grpc.StatusCode.FAILED_PRECONDITION: _HttpMapping(409, "failed_precondition"),
    grpc.StatusCode.ABORTED: _HttpMapping(409, "conflict"),
    grpc.StatusCode.PERMISSION_DENIED: _HttpMapping(403, "forbidden"),
    grpc.StatusCode.UNAUTHENTICATED: _HttpMapping(401, "unauthenticated"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: _HttpMapping(429, "resource_exhausted"),
    grpc.StatusCode.UNAVAILABLE: _HttpMapping(503, "upstream_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: _HttpMapping(504, "upstream_timeout"),
}
# Any other status: a peer that failed (502), or a bug here (500).
_PEER_FAILED = _HttpMapping(502, "upstream_error")
_INTERNAL = _HttpMapping(500, "internal_error")

# Seconds a client should wait before retrying a call the fleet could not serve.
RETRY_AFTER_SECONDS = 1

# 4xx: the message tells the client what to fix, so it is passed on. 5xx: the message describes
# the fleet's insides, so the client gets a fixed sentence and the message is logged.
_FIXED_DETAIL = {
    503: "the {peer} service is unavailable; try again shortly",
    504: "the {peer} service did not answer in time; try again shortly",
    502: "the {peer} service failed; quote the request id when reporting it",
    500: "internal error; quote the request id when reporting it",
}

# Every List RPC (and store) refuses a foreign cursor with this field (edrs_core.pagination);
# clients know it as the `pageToken` query parameter.
_PAGE_TOKEN_FIELD = "page.page_token"


def problem_of(error: ServiceError) -> ApiError:
    """The problem a client sees for `error`: raised by the gateway's own code, or by a peer (its
    `peer` set by edrs_core's mapping). Used by the exception handler, SSE and the WebSocket."""
    mapping = _HTTP.get(error.code) or (_PEER_FAILED if error.peer else _INTERNAL)
    if mapping.status == 422:
        field = error.field
        if field is None and error.message.startswith(_PAGE_TOKEN_FIELD):
            field = _PAGE_TOKEN_FIELD  # a peer's refusal: the field does not cross the wire
        detail = error.message.replace(_PAGE_TOKEN_FIELD, "pageToken")
        if field == _PAGE_TOKEN_FIELD:
            pointer = {"in": "query", "pointer": "/pageToken", "detail": detail}
            return ApiError(422, "invalid_page_token", detail, errors=[pointer])
        errors = [{"in": "body", "pointer": f"/{field}", "detail": error.message}] if field else []
        return ApiError(422, mapping.code, detail, errors=errors)
    if mapping.status < 500:
        detail = error.message
    else:
        detail = _FIXED_DETAIL[mapping.status].format(peer=error.peer or "gateway")
        if isinstance(error, PeerNotConfigured):
            log.error("%s", error.message)  # the operator's mistake, logged for them
        elif error.peer:
            log.warning("call to %s failed with %s: %s", error.peer, error.code.name, error.message)
        else:
            log.error("%s: %s", error.code.name, error.message, exc_info=error)
    headers = {}
    if mapping.status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return ApiError(mapping.status, mapping.code, detail, headers=headers)


def _pointer(loc: tuple[Any, ...]) -> str:
    # ("body", "display_name") -> "/displayName": JSON Pointer into what the client sent.
    parts = [str(to_camel(p)) if isinstance(p, str) else str(p) for p in loc[1:]]
    return "/" + "/".join(parts) if parts else ""


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path: Starlette's own 405 names only the first
    route that matched the path, while a path is often served by several (GET list, POST create)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.code,
            exc.detail,
            title=exc.title,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"in": str(e["loc"][0]), "pointer": _pointer(tuple(e["loc"])), "detail": e["msg"]}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"pointer": "", "detail": "invalid request"}
        where = first["pointer"] or first.get("in", "request")
        return problem_response(
            422,
            "validation_failed",
            f"{where}: {first['detail']}",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthenticated",
            403: "forbidden",
        }.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(
            exc.status_code,
            code,
            str(exc.detail),
            instance=request.url.path,
            headers=headers,
        )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        # A route needs no wrapper: its store's errors and its peers' (edrs_core maps a failed
        # call to a ServiceError) all end here.
        return await _api_error(request, problem_of(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal_error", "internal error; quote the request id when reporting it"
        )
