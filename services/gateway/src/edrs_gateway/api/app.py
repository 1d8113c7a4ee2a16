"""Builds the public API: FastAPI app, error format, docs at /api/docs, /api/redoc, /api/openapi.json."""

from __future__ import annotations

from fastapi import FastAPI

from edrs_gateway.api.problems import install_problem_handlers
from edrs_gateway.context import GatewayContext

API_PREFIX = "/api/v1"


def create_api(ctx: GatewayContext) -> FastAPI:
    app = FastAPI(
        title="EDRS API",
        version="1.0.0",
        summary="Talk to AI personas, manage your tenant, publish and follow events.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    # Routers are included here, one line each (auth, users, api keys, audit, events, personas...).
    return app
