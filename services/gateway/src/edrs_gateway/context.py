"""Everything the gateway's routes use, built once at start-up (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal
from uuid import UUID

from edrs_core import Runtime
from edrs_core.clock import Clock, SystemClock
from edrs_core.events import ServiceEvents
from edrs_events.pg import Connection
from fastapi import Depends, Request

from edrs_gateway.auth.fleet_tokens import FleetTokens
from edrs_gateway.auth.login import Authenticator, Lockout
from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.auth.revocations import TokenRevocations
from edrs_gateway.auth.signing_keys import KeyRing, SigningKeyStore, signing_key_cipher
from edrs_gateway.auth.tokens import TokenService
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.api_keys import ApiKeyStore
from edrs_gateway.identity.audit import ERASED_USER, AuditLog
from edrs_gateway.identity.refresh_tokens import RefreshTokenStore
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import TenantStore
from edrs_gateway.store.postgres import PostgresTenantStore


@dataclass
class GatewayContext:
    settings: GatewaySettings
    runtime: Runtime[GatewaySettings]
    tenants: TenantStore
    users: UserStore
    api_keys: ApiKeyStore
    refresh_tokens: RefreshTokenStore
    audit: AuditLog
    passwords: Passwords
    signing_keys: SigningKeyStore
    tokens: TokenService
    fleet_tokens: FleetTokens
    revocations: TokenRevocations
    authenticator: Authenticator
    clock: Clock
    # Writes the gateway's events to its outbox (the relay is started by the service's build()).
    events: ServiceEvents

    @classmethod
    def build(
        cls, settings: GatewaySettings, rt: Runtime[GatewaySettings], *, clock: Clock | None = None
    ) -> GatewayContext:
        """`clock` judges lockouts and key expiry: the system clock unless a test holds time."""
        clock = clock or SystemClock()
        if rt.redis is None:
            raise RuntimeError("the gateway needs Redis (EDRS_GATEWAY_REDIS_URL)")
        tenants = PostgresTenantStore(rt.db)
        users = UserStore(rt.db)
        api_keys = ApiKeyStore(rt.db)
        refresh_tokens = RefreshTokenStore(
            rt.db, family_ttl=timedelta(days=settings.refresh_token_ttl_days)
        )
        audit = AuditLog(rt.db)
        passwords = Passwords()
        signing_keys = SigningKeyStore(rt.db, signing_key_cipher(settings.key_encryption_secret))
        keys = KeyRing(signing_keys, cache_seconds=settings.signing_key_cache_seconds)
        tokens = TokenService(
            keys,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
        )
        fleet_tokens = FleetTokens(
            keys,
            issuer=settings.identity_issuer,
            audience=settings.identity_audience,
            ttl_seconds=settings.fleet_token_ttl_seconds,
        )
        revocations = TokenRevocations(rt.redis)
        authenticator = Authenticator(
            tenants=tenants,
            users=users,
            api_keys=api_keys,
            refresh_tokens=refresh_tokens,
            tokens=tokens,
            revocations=revocations,
            audit=audit,
            passwords=passwords,
            lockout=Lockout(
                settings.lockout_threshold, timedelta(minutes=settings.lockout_minutes)
            ),
            clock=clock,
        )
        return cls(
            settings=settings,
            runtime=rt,
            tenants=tenants,
            users=users,
            api_keys=api_keys,
            refresh_tokens=refresh_tokens,
            audit=audit,
            passwords=passwords,
            signing_keys=signing_keys,
            tokens=tokens,
            fleet_tokens=fleet_tokens,
            revocations=revocations,
            authenticator=authenticator,
            clock=clock,
            events=ServiceEvents(settings.service_name),
        )

    async def end_sessions(self, kind: Literal["user", "api_key"], subject_id: UUID) -> None:
        """Refuse the subject's access tokens from now on and revoke its refresh tokens."""
        await self.revocations.revoke_subject(
            kind, str(subject_id), self.settings.access_token_ttl_seconds
        )
        await self.refresh_tokens.revoke_subject(kind, subject_id)

    async def delete_user(
        self, tenant_id: UUID, user_id: UUID, *, actor: str, ip: str | None
    ) -> bool:
        """Delete a user and erase what the gateway holds of them; False when not found.

        One transaction: the user row, their refresh tokens, their names in the audit log (see
        `AuditLog.erase_subject`), the audit entry of the deletion and the `gateway.user_deleted`
        event that has memory and persona erase theirs. Then their access tokens stop working."""
        user = await self.users.get(tenant_id, user_id)
        if user is None:
            return False

        async def erase(conn: Connection) -> None:
            event = await self.events.add(
                conn,
                "gateway.user_deleted",
                {"user_id": str(user_id)},
                aggregate_id=str(user_id),
                client_id=str(tenant_id),
            )
            await self.refresh_tokens.forget_subject(conn, tenant_id, "user", user_id)
            await self.audit.erase_subject(
                conn, tenant_id, [f"user:{user_id}", f"email:{user.email.lower()}"]
            )
            await self.audit.record(
                tenant_id, "user.deleted", "success", actor=actor, target=ERASED_USER,
                details={"eventId": str(event.event_id)}, ip=ip, conn=conn,
            )  # fmt: skip

        if not await self.users.delete(tenant_id, user_id, erase):
            return False
        await self.revocations.revoke_subject(
            "user", str(user_id), self.settings.access_token_ttl_seconds
        )
        return True


async def get_context(request: Request) -> GatewayContext:
    """FastAPI dependency: the context of the app serving this request."""
    ctx: GatewayContext = request.app.state.ctx
    return ctx


# A route parameter typed `Ctx` receives the context of the app serving the request.
Ctx = Annotated[GatewayContext, Depends(get_context)]
