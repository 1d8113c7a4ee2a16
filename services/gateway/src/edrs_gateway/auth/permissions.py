"""One permission table for every route: which role may do what."""

from __future__ import annotations

from enum import StrEnum

from edrs_gateway.auth.principal import Role


class Permission(StrEnum):
    TENANT_READ = "tenant:read"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    AUDIT_READ = "audit:read"
    EVENTS_PUBLISH = "events:publish"
    EVENTS_READ = "events:read"
    PERSONAS_READ = "personas:read"
    PERSONAS_WRITE = "personas:write"
    CONVERSE = "conversations:write"


_READ = {
    Permission.TENANT_READ,
    Permission.PERSONAS_READ,
    Permission.EVENTS_READ,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "member": frozenset(_READ | {Permission.PERSONAS_WRITE, Permission.CONVERSE}),
    "integrator": frozenset(_READ | {Permission.EVENTS_PUBLISH}),
    "viewer": frozenset(_READ),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
