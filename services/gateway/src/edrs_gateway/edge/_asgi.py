"""Small helpers the edge middlewares share: who is calling, exempt paths, raw header access."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.types import Scope

from edrs_gateway.auth.principal import Principal


def principal_of(scope: Scope) -> Principal | None:
    """The Principal AuthenticationMiddleware verified, or None for an anonymous request."""
    state = scope.get("state")
    found = state.get("principal") if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else None


def client_ip(scope: Scope) -> str:
    """The peer address; uvicorn's proxy_headers option makes this the real client behind a proxy."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def is_exempt(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p) for p in prefixes)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def replace_header(
    headers: Iterable[tuple[bytes, bytes]], name: bytes, value: bytes | None
) -> list[tuple[bytes, bytes]]:
    """`headers` without `name`, plus `name: value` unless value is None."""
    kept = [(k, v) for k, v in headers if k.lower() != name]
    if value is not None:
        kept.append((name, value))
    return kept
