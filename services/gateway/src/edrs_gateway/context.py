"""Everything the gateway's routes use, built once at start-up (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from edrs_core import Runtime
from fastapi import Request

from edrs_gateway.config import GatewaySettings
from edrs_gateway.store import TenantStore


@dataclass
class GatewayContext:
    settings: GatewaySettings
    runtime: Runtime
    tenants: TenantStore


def get_context(request: Request) -> GatewayContext:
    """FastAPI dependency: the context of the app serving this request."""
    ctx: GatewayContext = request.app.state.ctx
    return ctx
