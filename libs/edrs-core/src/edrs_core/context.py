"""Per-request context (verified identity, tenant, request id) carried across gRPC, HTTP and logs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edrs_core.identity import Identity

# Metadata / header names. gRPC metadata keys must be lower case.
# No longer trusted (a caller could put any tenant in it): named only to explain the refusal.
CLIENT_ID_KEY = "x-edrs-client-id"
REQUEST_ID_KEY = "x-request-id"

# The tenant the current work is for: from the verified identity of a gRPC call, from the
# authenticated principal in the gateway, or from the event an event handler is handling.
client_id_var: ContextVar[str | None] = ContextVar("edrs_client_id", default=None)
# The verified identity of the call being served (None in event handlers and jobs): its token is
# what the next hop receives.
identity_var: ContextVar[Identity | None] = ContextVar("edrs_identity", default=None)
request_id_var: ContextVar[str | None] = ContextVar("edrs_request_id", default=None)
# time.monotonic() at which the incoming call's deadline passes; peer calls never outlive it.
deadline_var: ContextVar[float | None] = ContextVar("edrs_deadline", default=None)


def remaining_time() -> float | None:
    """Seconds left before the incoming call's deadline, or None when it has none."""
    deadline = deadline_var.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_context(
    client_id: str | None, request_id: str | None, identity: Identity | None = None
) -> Iterator[str]:
    """Bind tenant and request id (and a verified identity, when given: its tenant then wins) for
    the duration of a call; yields the request id in force."""
    rid = request_id or new_request_id()
    if identity is not None:
        client_id = identity.tenant_id or None
    t1 = client_id_var.set(client_id)
    t2 = request_id_var.set(rid)
    t3 = identity_var.set(identity) if identity is not None else None
    try:
        yield rid
    finally:
        if t3 is not None:
            identity_var.reset(t3)
        client_id_var.reset(t1)
        request_id_var.reset(t2)


@contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    """Make the calls started inside this block on behalf of `identity` (its tenant and token)."""
    t1 = identity_var.set(identity)
    t2 = client_id_var.set(identity.tenant_id or None)
    try:
        yield
    finally:
        client_id_var.reset(t2)
        identity_var.reset(t1)


def outgoing_metadata() -> list[tuple[str, str]]:
    """Request id of the current call, for the next hop (the identity travels as a token: see
    edrs_core.grpc_client)."""
    md: list[tuple[str, str]] = []
    if (rid := request_id_var.get()) is not None:
        md.append((REQUEST_ID_KEY, rid))
    return md


def require_client_id() -> str:
    """The caller's tenant; every tenant-scoped RPC refuses a call whose identity names none."""
    from edrs_core.errors import Unauthenticated

    cid = client_id_var.get()
    if not cid:
        raise Unauthenticated("the call's identity names no tenant: this RPC is tenant-scoped")
    return cid


def require_operator() -> Identity:
    """The caller's identity when it is an operator's (`edrs admin` tokens); PERMISSION_DENIED
    otherwise. Operator RPCs (tenant administration) are about tenants themselves."""
    from edrs_core.errors import PermissionDenied, Unauthenticated

    identity = identity_var.get()
    if identity is None:
        raise Unauthenticated("this RPC needs an operator's identity token")
    if not identity.is_operator:
        raise PermissionDenied(
            f"this RPC needs an operator's identity; the caller is a {identity.kind} with role "
            f"'{identity.role}'"
        )
    return identity
