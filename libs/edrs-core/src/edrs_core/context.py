"""Per-request context (tenant, request id) carried across gRPC, HTTP and log lines."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

# Metadata / header names. gRPC metadata keys must be lower case.
CLIENT_ID_KEY = "x-edrs-client-id"
REQUEST_ID_KEY = "x-request-id"

client_id_var: ContextVar[str | None] = ContextVar("edrs_client_id", default=None)
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
def request_context(client_id: str | None, request_id: str | None) -> Iterator[str]:
    """Bind tenant and request id for the duration of a call; yields the request id in force."""
    rid = request_id or new_request_id()
    t1 = client_id_var.set(client_id)
    t2 = request_id_var.set(rid)
    try:
        yield rid
    finally:
        client_id_var.reset(t1)
        request_id_var.reset(t2)


def context_from_metadata(metadata: Mapping[str, str]) -> tuple[str | None, str | None]:
    return metadata.get(CLIENT_ID_KEY) or None, metadata.get(REQUEST_ID_KEY) or None


def outgoing_metadata() -> list[tuple[str, str]]:
    """Tenant and request id of the current call, for the next hop."""
    md: list[tuple[str, str]] = []
    if (cid := client_id_var.get()) is not None:
        md.append((CLIENT_ID_KEY, cid))
    if (rid := request_id_var.get()) is not None:
        md.append((REQUEST_ID_KEY, rid))
    return md


def require_client_id() -> str:
    """The caller's tenant; every tenant-scoped RPC refuses a call that does not name one."""
    from edrs_core.errors import Unauthenticated

    cid = client_id_var.get()
    if not cid:
        raise Unauthenticated(f"the call carries no tenant: set the '{CLIENT_ID_KEY}' metadata")
    return cid
