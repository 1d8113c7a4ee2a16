"""Builds the public API: FastAPI app, error format, docs at /api/docs, /api/redoc, /api/openapi.json."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edrs_events import EventBus
from fastapi import FastAPI
from starlette.routing import Route

from edrs_gateway.api.common import problem_responses
from edrs_gateway.api.mcp_server import EdrsMcp
from edrs_gateway.api.problems import install_problem_handlers
from edrs_gateway.api.routes import (
    api_keys,
    audio,
    audit,
    auth,
    budgets,
    connectors,
    conversations,
    coworkers,
    events,
    import_export,
    jwks,
    knowledge,
    knowledge_gaps,
    knowledge_graph,
    knowledge_imports,
    memories,
    personas,
    relationships,
    research,
    tasks,
    tenant,
    tools,
    traces,
    users,
    voice_turns,
    webhooks,
    workflows,
    ws,
)
from edrs_gateway.api.turn_journal import TurnJournal
from edrs_gateway.auth.middleware import AuthenticationMiddleware, RevocationCheck
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import GatewayContext
from edrs_gateway.edge import (
    TIER_LIMITS,
    BodyLimitMiddleware,
    DlpGuard,
    DlpMiddleware,
    DlpScanner,
    Hit,
    IdempotencyMiddleware,
    IdempotencyStore,
    RateLimiter,
    RateLimitMiddleware,
    RevocationCheckWithLimit,
    SecurityHeadersMiddleware,
    TenantPolicies,
    TierLimits,
    TimeoutMiddleware,
    cors_middleware,
)
from edrs_gateway.identity import actor_of

API_PREFIX = "/api/v1"


MCP_PATH = f"{API_PREFIX}/mcp"
# Streams stay open as long as the client follows them: no request timeout, no concurrency slot.
STREAM_PATHS = (f"{API_PREFIX}/events/stream",)
# Audio takes longer than the request timeout allows (a 10-minute recording, a long text spoken):
# the gRPC call's own deadline (audio_timeout_seconds) bounds them instead. Rate limits apply.
TRANSCRIPTION_PATH = f"{API_PREFIX}/audio/transcriptions"
AUDIO_PATHS = (TRANSCRIPTION_PATH, f"{API_PREFIX}/audio/speech")
# Knowledge uploads and bulk imports: up to 100 MB (knowledge_max_upload_bytes) and as long as
# they take to send (knowledge_timeout_seconds bounds the call behind them).
KNOWLEDGE_UPLOADS = re.compile(rf"{API_PREFIX}/knowledge/collections/[^/]+/(?:files|imports)")
# A tenant's export streams as long as the tenant is large; an import takes a file as large as a
# knowledge import and applies it record by record (each call bounded by its own deadline).
EXPORT_PATH, IMPORT_PATH = f"{API_PREFIX}/export", f"{API_PREFIX}/import"
# Credentials are expected in these bodies, and their responses are secrets not to be stored.
AUTH_PATHS = (f"{API_PREFIX}/auth/",)
# DLP guards text on its way to other services. Account data (a user's email is their login)
# stays in the gateway and is the point of these routes, so it is not redacted.
# Inbound webhooks are verified by a signature over the exact bytes sent: DLP must not rewrite them.
# Connector settings are credentials and URLs for the integration service, not text for models.
INBOUND_WEBHOOK_PATHS = (f"{API_PREFIX}/hooks/",)
DLP_EXEMPT_PATHS = (
    *AUTH_PATHS,
    f"{API_PREFIX}/users",
    f"{API_PREFIX}/api-keys",
    *INBOUND_WEBHOOK_PATHS,
    f"{API_PREFIX}/connectors",
)


def create_api(ctx: GatewayContext, event_bus: EventBus) -> FastAPI:
    app = FastAPI(
        title="EDRS API",
        version="1.0.0",
        summary="Talk to AI personas, manage your tenant, publish and follow events.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        # The service's ObservabilityMiddleware (edrs_core.http) already opens the request's
        # server span, counts it and logs it; FastAPI's own telemetry would do all of it a second
        # time, plus a span per dependency and per serialisation (a fifth of a GET's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.ctx = ctx
    app.state.event_bus = event_bus
    assert ctx.runtime.redis is not None
    app.state.turn_journal = TurnJournal(ctx.runtime.redis, ctx.settings.turn_journal_seconds)
    install_problem_handlers(app)
    _add_edge(app, ctx)
    # Routers are included here, one line each (auth, users, api keys, audit, events, personas...).
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(jwks.router, prefix=API_PREFIX)
    app.include_router(tenant.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(api_keys.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(personas.router, prefix=API_PREFIX)
    # Before the JSON messages route: takes that path's multipart (voice) requests.
    app.include_router(voice_turns.messages_alias, prefix=API_PREFIX)
    app.include_router(conversations.router, prefix=API_PREFIX)
    app.include_router(relationships.router, prefix=API_PREFIX)
    app.include_router(memories.router, prefix=API_PREFIX)
    app.include_router(coworkers.router, prefix=API_PREFIX)
    app.include_router(traces.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(ws.router, prefix=API_PREFIX)
    app.include_router(audio.router, prefix=API_PREFIX)
    app.include_router(voice_turns.router, prefix=API_PREFIX)
    app.include_router(connectors.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(tasks.router, prefix=API_PREFIX)
    app.include_router(budgets.router, prefix=API_PREFIX)
    app.include_router(tools.router, prefix=API_PREFIX)
    # EDRS as an MCP server (streamable HTTP, API-key bearer): an ASGI endpoint of its own.
    app.state.mcp = EdrsMcp(ctx)
    app.router.routes.append(
        Route(MCP_PATH, endpoint=app.state.mcp, methods=["GET", "POST", "DELETE"])
    )
    for router in (workflows.workflows, workflows.runs, workflows.approvals, workflows.schedules):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(knowledge.router, prefix=API_PREFIX)
    app.include_router(knowledge_imports.router, prefix=API_PREFIX)
    app.include_router(knowledge_gaps.router, prefix=API_PREFIX)
    app.include_router(knowledge_graph.router, prefix=API_PREFIX)
    app.include_router(research.router, prefix=API_PREFIX)
    app.include_router(import_export.router, prefix=API_PREFIX)
    _document_edge_responses(app)
    return app


MESSAGES_PATH = f"{API_PREFIX}/personas/{{personaId}}/conversations/{{conversationId}}/messages"
VOICE_MESSAGES_PATH = MESSAGES_PATH.removesuffix("/messages") + "/voice-messages"


def _document_voice_alias(schema: dict[str, Any]) -> None:
    """The messages route also takes the voice-messages route's multipart body (a route of its
    own, hidden from the schema: voice_turns.messages_alias): shown as a second body."""
    paths = schema.get("paths", {})
    voice = paths.get(VOICE_MESSAGES_PATH, {}).get("post")
    messages = paths.get(MESSAGES_PATH, {}).get("post")
    if voice is None or messages is None:
        return
    multipart = voice["requestBody"]["content"]["multipart/form-data"]
    messages["requestBody"]["content"]["multipart/form-data"] = multipart
    messages["description"] += (
        " A multipart body (a recording in `file`, as `.../voice-messages` takes) is a turn by "
        "voice, the same as `.../voice-messages`: answered as its Server-Sent Events."
    )


def _document_edge_responses(app: FastAPI) -> None:
    """What the middleware stack may answer on any route, added to every operation of the schema
    so it tells clients all of it (the middlewares are outside FastAPI's view of the routes)."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        _document_voice_alias(schema)
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(API_PREFIX):
                continue
            for operation in operations.values():
                extra = [429]
                if "requestBody" in operation:
                    extra += [400, 413]  # unparseable JSON; over the body limit
                if (
                    path not in STREAM_PATHS
                    and path not in AUDIO_PATHS
                    and path not in (EXPORT_PATH, IMPORT_PATH)
                    and not KNOWLEDGE_UPLOADS.fullmatch(path.replace("{", "").replace("}", ""))
                ):
                    extra.append(504)
                responses = operation.setdefault("responses", {})
                for status, spec in problem_responses(*extra).items():
                    responses.setdefault(
                        str(status),
                        {"description": spec["description"], "content": spec["content"]},
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_edge(app: FastAPI, ctx: GatewayContext) -> None:
    """The middleware stack. Starlette runs the last added first, so this reads inside-out:
    request → security headers → CORS → body limit → timeout → authentication → rate limit →
    idempotency → DLP → route. Idempotency sits outside DLP so its fingerprint covers the body
    the client sent; rate limits sit inside authentication so they know the tenant's tier."""
    settings = ctx.settings
    redis = ctx.runtime.redis
    assert redis is not None

    async def record_dlp_hits(principal: Principal | None, hits: Sequence[Hit]) -> None:
        if principal is None:
            return  # anonymous requests reach no route that stores text
        await ctx.audit.record(
            principal.tenant_id,
            "dlp.detected",
            "success",
            actor=actor_of(principal),
            details={"hits": [{"kind": h.kind, "pointer": h.pointer} for h in hits]},
        )

    scanner, policies = DlpScanner(), TenantPolicies(ctx.runtime.db)
    app.add_middleware(
        DlpMiddleware,
        scanner=scanner,
        policy_of=policies.dlp_policy,
        on_hits=record_dlp_hits,
        exempt_paths=DLP_EXEMPT_PATHS,
    )
    # The WebSocket is outside the HTTP middlewares' reach: it applies the same DLP and rate
    # limits to each message frame itself (api/routes/ws.py).
    app.state.dlp = DlpGuard(scanner, policies.dlp_policy, record_dlp_hits)
    app.state.rate_limiter = None
    revocation_check: RevocationCheck | None = None
    app.add_middleware(
        IdempotencyMiddleware, store=IdempotencyStore(redis), exempt_paths=AUTH_PATHS
    )
    if settings.rate_limits_enabled:
        limits = {
            **TIER_LIMITS,
            **{
                tier: TierLimits(o.per_minute, o.burst, o.concurrency)
                for tier, o in settings.rate_limit_overrides.items()
            },
        }
        limiter = RateLimiter(redis, limits=limits)
        app.add_middleware(RateLimitMiddleware, limiter=limiter, exempt_paths=STREAM_PATHS)
        app.state.rate_limiter = limiter
        # The revocation check takes each limited request's rate-limit decision in its Redis
        # round trip; RateLimitMiddleware applies it (and releases the slot).
        revocation_check = RevocationCheckWithLimit(limiter, ctx.revocations, STREAM_PATHS)
    # Verifies the bearer token of every request and leaves the Principal in the scope state for
    # routes (`require`) and for the middlewares inside it (rate limits, idempotency, DLP).
    app.add_middleware(
        AuthenticationMiddleware,
        tokens=ctx.tokens,
        revocations=ctx.revocations,
        fleet_tokens=ctx.fleet_tokens,
        api_key_paths=(MCP_PATH,),
        api_keys=ctx.authenticator.api_key_principal,
        revocation_check=revocation_check,
    )
    app.add_middleware(
        TimeoutMiddleware,
        timeout_seconds=settings.request_timeout_seconds,
        # An MCP call may run a persona's turn, bounded by the turn's own deadline.
        exempt_paths=(*STREAM_PATHS, *AUDIO_PATHS, MCP_PATH, EXPORT_PATH, IMPORT_PATH),
        exempt_patterns=(KNOWLEDGE_UPLOADS,),
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits={
            TRANSCRIPTION_PATH: settings.audio_max_upload_bytes,
            IMPORT_PATH: settings.knowledge_max_upload_bytes,
        },
        pattern_limits=[(KNOWLEDGE_UPLOADS, settings.knowledge_max_upload_bytes)],
    )
    if (cors := cors_middleware(settings)) is not None:
        app.add_middleware(cors.cls, *cors.args, **cors.kwargs)
    app.add_middleware(SecurityHeadersMiddleware)
