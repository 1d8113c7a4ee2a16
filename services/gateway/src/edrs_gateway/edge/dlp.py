"""Data loss prevention at the edge: what clients send is scanned (edrs_core.dlp's scanner) and,
by the tenant's policy, redacted or refused; every hit goes to the audit log, never its value."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from edrs_core.dlp import (
    DlpPolicy,
    DlpScanner,
    Hit,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.auth.principal import Principal
from edrs_gateway.edge._asgi import is_exempt, principal_of, replace_header

log = logging.getLogger("edrs.gateway.dlp")


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


# Deeper JSON than any route takes: the scan (and the routes' validation) recurse per level, and
# near Python's recursion limit that was an internal error rather than an answer.
MAX_JSON_DEPTH = 64


class TooDeep(ValueError):
    pass


def _parse(body: bytes) -> Any:
    try:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson refuses integers beyond 64 bits (and nesting beyond 1,024) that the stdlib
            # may accept.
            document = json.loads(body)
    except RecursionError:
        raise TooDeep from None
    if deeper_than(document, MAX_JSON_DEPTH):
        raise TooDeep
    return document


def deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (iteratively: no recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class _TtlCache:
    """Tenant -> policy for a few seconds, so a policy change applies quickly without a query per
    request."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, DlpPolicy]] = {}

    def get(self, key: str) -> DlpPolicy | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: DlpPolicy) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.seconds, value)


PolicyOf = Callable[[str], Awaitable[DlpPolicy]]
OnHits = Callable[[Principal | None, list[Hit]], Awaitable[None]]


@dataclass(frozen=True)
class Verdict:
    """What the tenant's policy made of a document: its redacted copy, the hits, and whether the
    policy blocks it."""

    clean: Any
    hits: list[Hit]
    blocked: bool


class DlpGuard:
    """Scan a document, report its hits and apply the caller's tenant policy (cached a few
    seconds). The HTTP middleware uses it for bodies; the WebSocket for each message frame."""

    def __init__(
        self,
        scanner: DlpScanner,
        policy_of: PolicyOf,
        on_hits: OnHits,
        *,
        policy_cache_seconds: float = 30.0,
        anonymous_policy: DlpPolicy = "redact",
    ) -> None:
        self.scanner = scanner
        self.policy_of = policy_of
        self.on_hits = on_hits
        self.anonymous_policy = anonymous_policy
        self._policies = _TtlCache(policy_cache_seconds)

    async def policy(self, principal: Principal | None) -> DlpPolicy:
        if principal is None:
            return self.anonymous_policy
        cached = self._policies.get(principal.tenant_id)
        if cached is None:
            cached = await self.policy_of(principal.tenant_id)
            self._policies.put(principal.tenant_id, cached)
        return cached

    async def inspect(self, principal: Principal | None, document: Any) -> Verdict:
        clean, hits = self.scanner.scan_json(document)
        if not hits:
            return Verdict(document, [], blocked=False)
        try:
            await self.on_hits(principal, hits)
        except Exception:
            # A failing audit sink must not let the data through unredacted, nor fail the call.
            log.exception("recording %d DLP hits failed", len(hits))
        return Verdict(clean, hits, blocked=await self.policy(principal) == "block")


def blocked_problem(hits: Sequence[Hit]) -> tuple[str, list[dict[str, Any]]]:
    """The detail and `errors` of a 422 `sensitive_data_blocked`."""
    kinds = sorted({h.kind for h in hits})
    detail = f"the request holds sensitive data ({', '.join(kinds)}); remove it and retry"
    errors = [
        {"in": "body", "pointer": h.pointer, "kind": h.kind, "detail": f"{h.kind} found"}
        for h in hits
    ]
    return detail, errors


class DlpMiddleware:
    """Pure ASGI: scan JSON bodies of POST/PUT/PATCH before the app sees them.

    Under the tenant's policy "redact" the body is rewritten; under "block" the request is answered
    422 `sensitive_data_blocked` listing kinds and JSON pointers. `on_hits(principal, hits)` is
    awaited for every request with findings (kinds and pointers only). Anonymous requests use
    `anonymous_policy`.
    """

    def __init__(
        self,
        app: ASGIApp,
        scanner: DlpScanner,
        policy_of: PolicyOf,
        on_hits: OnHits,
        *,
        exempt_paths: Sequence[str] = ("/api/v1/auth/",),
        policy_cache_seconds: float = 30.0,
        anonymous_policy: DlpPolicy = "redact",
    ) -> None:
        self.app = app
        self.guard = DlpGuard(
            scanner,
            policy_of,
            on_hits,
            policy_cache_seconds=policy_cache_seconds,
            anonymous_policy=anonymous_policy,
        )
        self.exempt_paths = tuple(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or is_exempt(scope["path"], self.exempt_paths)
            or not _is_json(dict(scope["headers"]).get(b"content-type"))
        ):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        try:
            document = _parse(body)
        except TooDeep:
            await problem_response(
                422,
                "validation_failed",
                f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
                instance=scope["path"],
            )(scope, receive, send)
            return
        except ValueError:
            document = None  # not JSON after all: the app's validation answers it
        if document is not None:
            verdict = await self.guard.inspect(principal_of(scope), document)
            if verdict.blocked:
                detail, errors = blocked_problem(verdict.hits)
                await problem_response(
                    422,
                    "sensitive_data_blocked",
                    detail,
                    instance=scope["path"],
                    errors=errors,
                )(scope, receive, send)
                return
            if verdict.hits:
                body = _dump(verdict.clean)
                scope = {
                    **scope,
                    "headers": replace_header(
                        scope["headers"], b"content-length", str(len(body)).encode()
                    ),
                }

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _dump(document: Any) -> bytes:
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(document, ensure_ascii=False).encode()
