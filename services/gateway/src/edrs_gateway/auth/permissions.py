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
    # The caller's own conversations, relationship and memories with a persona.
    CONVERSATIONS_READ = "conversations:read"
    # Reasoning traces labelled with the caller's own user id ...
    TRACES_READ = "traces:read"
    # ... and every trace of the tenant.
    TRACES_READ_ALL = "traces:read_all"
    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"
    # What the tenant may spend, and what it spent: operators set budgets (admins).
    BUDGETS_READ = "budgets:read"
    BUDGETS_WRITE = "budgets:write"
    USAGE_READ = "usage:read"
    # The tool registry: reading it, adding MCP servers and setting impacts (admins), and calling
    # a tool directly, outside any persona's policy (admins).
    TOOLS_READ = "tools:read"
    TOOLS_WRITE = "tools:write"
    TOOLS_CALL = "tools:call"
    # Knowledge collections, documents, search and the graph; writing adds, imports and deletes.
    KNOWLEDGE_READ = "knowledge:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    # Research jobs, their reports, and sources; writing starts and cancels jobs, registers,
    # pins, blocks, re-fetches and deletes sources.
    RESEARCH_READ = "research:read"
    RESEARCH_WRITE = "research:write"
    # Connectors hold credentials (never shown back); webhooks send the tenant's events out.
    CONNECTORS_READ = "connectors:read"
    CONNECTORS_WRITE = "connectors:write"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    # A whole tenant's personas, knowledge, workflows and tasks out (export) and in (import).
    TENANT_EXPORT = "tenant:export"
    TENANT_IMPORT = "tenant:import"


_READ = {
    Permission.TENANT_READ,
    Permission.PERSONAS_READ,
    Permission.EVENTS_READ,
    Permission.TASKS_READ,
    Permission.TOOLS_READ,
    Permission.KNOWLEDGE_READ,
    Permission.RESEARCH_READ,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "member": frozenset(
        _READ
        | {
            Permission.PERSONAS_WRITE,
            Permission.CONVERSE,
            Permission.CONVERSATIONS_READ,
            Permission.TRACES_READ,
            Permission.TASKS_WRITE,
            Permission.BUDGETS_READ,
            Permission.USAGE_READ,
            Permission.KNOWLEDGE_WRITE,
            Permission.RESEARCH_WRITE,
        }
    ),
    # Integrations feed documents in (connectors, imports), read connectors, manage webhooks.
    "integrator": frozenset(
        _READ
        | {
            Permission.EVENTS_PUBLISH,
            Permission.KNOWLEDGE_WRITE,
            Permission.CONNECTORS_READ,
            Permission.WEBHOOKS_READ,
            Permission.WEBHOOKS_WRITE,
        }
    ),
    "viewer": frozenset(_READ | {Permission.BUDGETS_READ, Permission.USAGE_READ}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
