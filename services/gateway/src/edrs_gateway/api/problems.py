"""RFC 9457 problem details: every error is `application/problem+json` with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from edrs_core.context import request_id_var
from edrs_core.errors import PeerNotConfigured
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
) -> JSONResponse:
    error = ApiError(status, code, detail, title=title, errors=errors)
    body = problem_body(error, instance)
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

    @app.exception_handler(PeerNotConfigured)
    async def _peer_not_configured(request: Request, exc: PeerNotConfigured) -> JSONResponse:
        # The operator's mistake, logged for them; the client learns which service is missing.
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return problem_response(
            503,
            "upstream_unavailable",
            f"the {exc.peer} service is unavailable; try again shortly",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal_error", "internal error; quote the request id when reporting it"
        )
