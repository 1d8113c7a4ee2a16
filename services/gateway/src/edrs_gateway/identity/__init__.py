"""Who may call the gateway: users, API keys, refresh-token families and the audit log."""

from edrs_gateway.identity.api_keys import ApiKey, ApiKeyStore
from edrs_gateway.identity.audit import AuditEvent, AuditLog, actor_of
from edrs_gateway.identity.refresh_tokens import RefreshTokenStore
from edrs_gateway.identity.users import User, UserStore

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "AuditEvent",
    "AuditLog",
    "RefreshTokenStore",
    "User",
    "UserStore",
    "actor_of",
]
