"""Grants: exchange a password, an API key or a refresh token for tokens; and revocation.

Every failure answers the same `LoginFailed`, whether the tenant or user does not exist, the
password is wrong or the user is locked: a caller cannot learn which emails are registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from edrs_core.clock import Clock

from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.revocations import TokenRevocations
from edrs_gateway.auth.tokens import InvalidToken, TokenService
from edrs_gateway.identity.api_keys import ApiKeyStore
from edrs_gateway.identity.audit import AuditLog
from edrs_gateway.identity.refresh_tokens import RefreshSubject, RefreshTokenStore, Reused
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import TenantStore


class LoginFailed(Exception):
    """Wrong credentials, in the one wording every kind of failure shares."""

    def __init__(self) -> None:
        super().__init__("the credentials are not valid")


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int
    refresh_token: str | None


@dataclass(frozen=True)
class Lockout:
    threshold: int
    duration: timedelta


class Authenticator:
    def __init__(
        self,
        *,
        tenants: TenantStore,
        users: UserStore,
        api_keys: ApiKeyStore,
        refresh_tokens: RefreshTokenStore,
        tokens: TokenService,
        revocations: TokenRevocations,
        audit: AuditLog,
        passwords: Passwords,
        lockout: Lockout,
        clock: Clock,
    ) -> None:
        self.tenants = tenants
        self.users = users
        self.api_keys = api_keys
        self.refresh_tokens = refresh_tokens
        self.tokens = tokens
        self.revocations = revocations
        self.audit = audit
        self.passwords = passwords
        self.lockout = lockout
        # Lockouts and key expiry are judged by this clock (tests move it across a lockout).
        self.clock = clock

    async def password_grant(
        self, tenant_id: UUID, email: str, password: str, ip: str | None
    ) -> TokenGrant:
        tenant = await self.tenants.get(tenant_id)
        found = await self.users.credentials(tenant_id, email) if tenant else None
        # Verify even when nothing was found, so every failure takes the same time.
        matched = await self.passwords.verify_or_burn(
            found.password_hash if found else None, password
        )
        target = f"email:{email.lower()}"
        if tenant is None or found is None:
            await self.audit.record(
                tenant.id if tenant else None,
                "login",
                "failure",
                target=target,
                details={"reason": "unknown tenant" if tenant is None else "unknown user"},
                ip=ip,
            )
            raise LoginFailed
        user = found.user
        actor = f"user:{user.id}"
        now = self.clock.now()
        if user.locked_until is not None and user.locked_until > now:
            await self.audit.record(
                tenant.id, "login", "failure", actor=actor, target=target,
                details={"reason": "locked", "lockedUntil": user.locked_until.isoformat()}, ip=ip,
            )  # fmt: skip
            raise LoginFailed
        if not matched:
            locked = await self.users.record_failed_login(
                user.id, threshold=self.lockout.threshold, locked_until=now + self.lockout.duration
            )
            await self.audit.record(
                tenant.id, "login", "failure", actor=actor, target=target,
                details={"reason": "wrong password"}, ip=ip,
            )  # fmt: skip
            if locked:
                await self.audit.record(
                    tenant.id, "user.locked", "success", actor=actor, target=f"user:{user.id}",
                    details={"failures": self.lockout.threshold,
                             "minutes": self.lockout.duration.total_seconds() // 60},
                    ip=ip,
                )  # fmt: skip
            raise LoginFailed
        rehash = (
            await self.passwords.hash(password)
            if self.passwords.needs_rehash(found.password_hash)
            else None
        )
        await self.users.record_successful_login(user.id, rehash)
        principal = Principal(
            tenant_id=str(tenant.id),
            tier=tenant.tier,
            subject_id=str(user.id),
            subject_kind="user",
            role=user.role,
        )
        access = await self.tokens.issue(principal)
        refresh = await self.refresh_tokens.start_family(tenant.id, "user", user.id)
        await self.audit.record(tenant.id, "login", "success", actor=actor, target=target, ip=ip)
        return TokenGrant(access.token, access.expires_in, refresh)

    async def api_key_principal(self, api_key: str) -> Principal | None:
        """Who a usable key is (its tenant, role and scopes); None for any other key."""
        key = await self.api_keys.authenticate(api_key, self.clock.now())
        tenant = await self.tenants.get(key.tenant_id) if key else None
        if key is None or tenant is None:
            return None
        return Principal(
            tenant_id=str(tenant.id),
            tier=tenant.tier,
            subject_id=str(key.id),
            subject_kind="api_key",
            role=key.role,
            scopes=frozenset(key.scopes),
        )

    async def api_key_grant(self, api_key: str, ip: str | None) -> TokenGrant:
        """A token for a usable key; no refresh token, since the key itself logs in again."""
        principal = await self.api_key_principal(api_key)
        if principal is None:
            # The prefix is not secret and lets an admin see attempts on a revoked/expired key.
            prefix = api_key.split("_")[1] if api_key.count("_") >= 2 else ""
            await self.audit.record(
                None, "login.api_key", "failure", target=f"api_key_prefix:{prefix[:32]}", ip=ip
            )
            raise LoginFailed
        access = await self.tokens.issue(principal)
        key_id = principal.subject_id
        await self.audit.record(
            UUID(principal.tenant_id), "login.api_key", "success", actor=f"api_key:{key_id}",
            target=f"api_key:{key_id}", ip=ip,
        )  # fmt: skip
        return TokenGrant(access.token, access.expires_in, None)

    async def refresh_grant(self, refresh_token: str, ip: str | None) -> TokenGrant:
        outcome = await self.refresh_tokens.rotate(refresh_token)
        if outcome is None:
            await self.audit.record(None, "token.refresh", "failure", ip=ip)
            raise LoginFailed
        subject = outcome.subject
        actor = f"{subject.subject_kind}:{subject.subject_id}"
        if isinstance(outcome, Reused):
            await self.audit.record(
                subject.tenant_id, "token.refresh_reuse", "denied", actor=actor,
                target=f"token_family:{subject.family_id}",
                details={"reason": "a used refresh token was presented; its family is revoked"},
                ip=ip,
            )  # fmt: skip
            raise LoginFailed
        principal = await self._current_principal(subject)
        if principal is None:
            await self.refresh_tokens.revoke(outcome.token)
            await self.audit.record(
                subject.tenant_id, "token.refresh", "failure", actor=actor,
                details={"reason": "subject no longer exists"}, ip=ip,
            )  # fmt: skip
            raise LoginFailed
        access = await self.tokens.issue(principal)
        await self.audit.record(subject.tenant_id, "token.refresh", "success", actor=actor, ip=ip)
        return TokenGrant(access.token, access.expires_in, outcome.token)

    async def _current_principal(self, subject: RefreshSubject) -> Principal | None:
        """The subject as it is now: a refresh picks up a new role or tier, or fails if deleted."""
        tenant = await self.tenants.get(subject.tenant_id)
        if tenant is None:
            return None
        if subject.subject_kind == "user":
            user = await self.users.get(subject.tenant_id, subject.subject_id)
            if user is None or (
                user.locked_until is not None and user.locked_until > self.clock.now()
            ):
                return None
            role, scopes = user.role, frozenset[str]()
        else:
            key = await self.api_keys.get(subject.tenant_id, subject.subject_id)
            if key is None or not key.usable_at(self.clock.now()):
                return None
            role, scopes = key.role, frozenset(key.scopes)
        return Principal(
            tenant_id=str(tenant.id),
            tier=tenant.tier,
            subject_id=str(subject.subject_id),
            subject_kind=subject.subject_kind,
            role=role,
            scopes=scopes,
        )

    async def revoke(self, token: str, actor: Principal | None, ip: str | None) -> None:
        """Revoke an access token (until it expires) or a refresh token's family; per RFC 7009 an
        unknown or invalid token is not an error, so the caller learns nothing from the answer."""
        try:
            verified = await self.tokens.verify(token)
        except InvalidToken:
            verified = None
        if verified is not None:
            p = verified.principal
            await self.revocations.revoke_token(p.token_id, verified.expires_at)
            await self.audit.record(
                p.tenant_id, "token.revoked", "success",
                actor=f"{p.subject_kind}:{p.subject_id}" if actor is None else
                f"{actor.subject_kind}:{actor.subject_id}",
                target=f"access_token:{p.token_id}", ip=ip,
            )  # fmt: skip
            return
        family = await self.refresh_tokens.revoke(token)
        if family is not None:
            await self.audit.record(
                family.tenant_id, "token.revoked", "success",
                actor=f"{family.subject_kind}:{family.subject_id}",
                target=f"token_family:{family.family_id}", ip=ip,
            )  # fmt: skip
