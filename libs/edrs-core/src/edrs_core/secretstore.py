"""The secret store: where credentials and signing secrets live, so that databases keep references.

    store = VaultSecretStore(settings.vault_config())     # Vault or OpenBao, KV version 2
    version = await store.put(("tenants", client_id, "connectors", str(connector_id)), values)
    values = await store.get(("tenants", client_id, "connectors", str(connector_id)))

`SecretStore` is the port; `VaultSecretStore` the adapter (hvac). It logs in with a token, AppRole
or Kubernetes service-account token, renews its token before the token expires and logs in again
when renewal is not possible any more (or the server refused the token): see
docs/decisions/0011-secrets-in-openbao.md. No method logs, raises or reprs a secret value.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import hvac
import hvac.exceptions
import requests
from pydantic import Field, SecretStr, model_validator

from edrs_core.settings import ServiceSettings

log = logging.getLogger("edrs.secretstore")

AuthMethod = Literal["token", "approle", "kubernetes"]
# Path segments are ours (tenant ids, UUIDs, fixed words): anything else is a bug, not data.
_SEGMENT = re.compile(r"[A-Za-z0-9_.@-]{1,200}")
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class SecretStoreError(Exception):
    """The secret store could not be used; the message says why (never with a secret in it)."""


class SecretNotFound(SecretStoreError):
    """No secret at that path (or not that version)."""


class SecretStore(Protocol):
    async def put(self, path: Sequence[str], values: Mapping[str, str]) -> int:
        """Store `values` as the new version at `path`; returns the version number."""
        ...

    async def get(self, path: Sequence[str], version: int | None = None) -> dict[str, str]:
        """The values at `path` (latest version, or `version`); SecretNotFound when absent."""
        ...

    async def delete(self, path: Sequence[str]) -> None:
        """Destroy every version at `path` (absent is fine)."""
        ...

    async def check(self) -> None:
        """Raise SecretStoreError unless the store is reachable and our token works."""
        ...


def secret_path(prefix: str, parts: Sequence[str]) -> str:
    for part in parts:
        if not _SEGMENT.fullmatch(part) or part in {".", ".."}:
            raise ValueError(f"secret path segment {part!r} is not a plain name")
    return "/".join([prefix.strip("/"), *parts]) if prefix.strip("/") else "/".join(parts)


@dataclass(frozen=True, kw_only=True)
class VaultConfig:
    address: str
    auth_method: AuthMethod = "token"
    token: SecretStr | None = None
    approle_role_id: str | None = None
    approle_secret_id: SecretStr | None = None
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_jwt_path: Path = SERVICE_ACCOUNT_TOKEN
    kubernetes_mount: str = "kubernetes"
    kv_mount: str = "secret"
    path_prefix: str = "edrs"
    namespace: str | None = None
    ca_cert: Path | None = None
    timeout_seconds: float = 5.0
    # Renew once less than this share of the token's lifetime is left.
    renew_fraction: float = 1 / 3
    # Names of the settings, for messages that tell the operator what to fix.
    setting_names: Mapping[str, str] = field(default_factory=dict)

    def setting(self, name: str) -> str:
        return self.setting_names.get(name, name)


class VaultSecretStore:
    """KV version 2 on Vault or OpenBao through hvac, under `kv_mount`/`path_prefix`.

    hvac is synchronous (requests), so each call runs in a worker thread of the store's own pool:
    in the event loop's default pool, other blocking work (DNS lookups, an SMTP connection
    waiting out its timeout) could queue secret reads and deletes behind it until their callers'
    deadlines passed (found by schemathesis: DELETE /connectors answered 504). Authentication state is
    guarded by one asyncio lock: concurrent callers that find the token due for renewal renew it
    once.
    """

    def __init__(
        self, config: VaultConfig, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._monotonic = monotonic
        self._client = hvac.Client(
            url=config.address,
            namespace=config.namespace,
            timeout=int(max(1, config.timeout_seconds)),
            verify=str(config.ca_cert) if config.ca_cert else True,
        )
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="secret-store")
        self._auth_lock = asyncio.Lock()
        self._logged_in = False
        # Monotonic time at which the token must be renewed, and at which it expires;
        # None: the token does not expire (a root or periodic-less token with TTL 0).
        self._renew_at: float | None = None
        self._expires_at: float | None = None
        self._renewable = False
        self.token_accessor: str | None = None
        """The accessor of the token in use (not a secret: it cannot read anything)."""

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(call, *args))

    def __repr__(self) -> str:
        return f"VaultSecretStore(address={self.config.address!r}, mount={self.config.kv_mount!r})"

    # -- the port -----------------------------------------------------------------------------

    async def put(self, path: Sequence[str], values: Mapping[str, str]) -> int:
        full = secret_path(self.config.path_prefix, path)

        def call() -> Any:
            return self._client.secrets.kv.v2.create_or_update_secret(
                path=full, secret=dict(values), mount_point=self.config.kv_mount
            )

        response = await self._call(call, f"write {full}")
        return int(response["data"]["version"])

    async def get(self, path: Sequence[str], version: int | None = None) -> dict[str, str]:
        full = secret_path(self.config.path_prefix, path)

        def call() -> Any:
            return self._client.secrets.kv.v2.read_secret_version(
                path=full,
                version=version,
                mount_point=self.config.kv_mount,
                raise_on_deleted_version=True,
            )

        response = await self._call(call, f"read {full}")
        data = response["data"]["data"]
        return {str(k): str(v) for k, v in data.items()}

    async def delete(self, path: Sequence[str]) -> None:
        full = secret_path(self.config.path_prefix, path)

        def call() -> Any:
            return self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=full, mount_point=self.config.kv_mount
            )

        with contextlib.suppress(SecretNotFound):
            await self._call(call, f"delete {full}")

    async def check(self) -> None:
        await self._call(lambda: self._client.auth.token.lookup_self(), "look up its own token")

    # -- authentication -------------------------------------------------------------------------

    async def _call(self, call: Callable[[], Any], what: str) -> Any:
        await self._ensure_token()
        try:
            return await self._in_thread(self._translate, call, what)
        except _TokenRefused:
            # Expired early, revoked, or its policy changed: log in again once, then try again.
            log.info("the secret store refused our token; logging in again")
            async with self._auth_lock:
                await self._in_thread(self._login)
        try:
            return await self._in_thread(self._translate, call, what)
        except _TokenRefused:
            raise SecretStoreError(
                f"the secret store refused to {what} with a fresh token: check the policy of "
                f"{self._identity()}"
            ) from None

    def _translate(self, call: Callable[[], Any], what: str) -> Any:
        try:
            return call()
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(f"no secret to {what}") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise _TokenRefused() from None
        except hvac.exceptions.VaultError as exc:
            raise SecretStoreError(f"the secret store failed to {what}: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise SecretStoreError(
                f"the secret store at {self.config.address} is unreachable "
                f"({type(exc).__name__}); cannot {what}"
            ) from None

    async def _ensure_token(self) -> None:
        if self._logged_in and not self._due():
            return
        async with self._auth_lock:
            if not self._logged_in:
                await self._in_thread(self._login)
            elif self._due():
                await self._in_thread(self._renew_or_login)

    def _due(self) -> bool:
        return self._renew_at is not None and self._monotonic() >= self._renew_at

    def _renew_or_login(self) -> None:
        if self._renewable:
            try:
                auth = self._client.auth.token.renew_self()["auth"]
            except (hvac.exceptions.VaultError, requests.RequestException) as exc:
                log.info("token renewal failed (%s); logging in again", type(exc).__name__)
            else:
                lease = int(auth.get("lease_duration") or 0)
                remaining = (
                    None if self._expires_at is None else self._expires_at - self._monotonic()
                )
                # At its max TTL a renewal grants no more time: log in for a new token instead.
                if remaining is None or lease > remaining + 1:
                    self._track(lease, bool(auth.get("renewable")))
                    log.info("secret store token renewed for %ss", lease)
                    return
        self._login()

    def _login(self) -> None:
        c = self.config
        try:
            if c.auth_method == "token":
                if c.token is None:
                    raise SecretStoreError(f"{c.setting('token')} is required")
                self._client.token = c.token.get_secret_value()
                data = self._client.auth.token.lookup_self()["data"]
                self._track(int(data.get("ttl") or 0), bool(data.get("renewable")))
                self.token_accessor = data.get("accessor")
            else:
                if c.auth_method == "approle":
                    if c.approle_role_id is None or c.approle_secret_id is None:
                        raise SecretStoreError(
                            f"{c.setting('approle_role_id')} and "
                            f"{c.setting('approle_secret_id')} are required"
                        )
                    response = self._client.auth.approle.login(
                        role_id=c.approle_role_id,
                        secret_id=c.approle_secret_id.get_secret_value(),
                        mount_point=c.approle_mount,
                    )
                else:
                    if c.kubernetes_role is None:
                        raise SecretStoreError(f"{c.setting('kubernetes_role')} is required")
                    try:
                        jwt = c.kubernetes_jwt_path.read_text().strip()
                    except OSError as exc:
                        raise SecretStoreError(
                            f"{c.setting('kubernetes_jwt_path')}: cannot read the service-account "
                            f"token at {c.kubernetes_jwt_path} ({exc.strerror})"
                        ) from None
                    response = self._client.auth.kubernetes.login(
                        role=c.kubernetes_role, jwt=jwt, mount_point=c.kubernetes_mount
                    )
                auth = response["auth"]
                self._track(int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
                self.token_accessor = auth.get("accessor")
        except (
            hvac.exceptions.Forbidden,
            hvac.exceptions.Unauthorized,
            hvac.exceptions.InvalidRequest,
        ) as exc:
            self._logged_in = False
            raise SecretStoreError(
                f"the secret store refused to log in {self._identity()}: {_reason(exc)}"
            ) from None
        except hvac.exceptions.VaultError as exc:
            self._logged_in = False
            raise SecretStoreError(f"the secret store failed at login: {_reason(exc)}") from None
        except requests.RequestException as exc:
            self._logged_in = False
            raise SecretStoreError(
                f"the secret store at {c.address} is unreachable ({type(exc).__name__})"
            ) from None
        self._logged_in = True
        log.info("logged in to the secret store (%s)", c.auth_method)

    def _track(self, ttl: int, renewable: bool) -> None:
        now = self._monotonic()
        self._renewable = renewable
        if ttl <= 0:
            self._renew_at = self._expires_at = None
            return
        self._expires_at = now + ttl
        self._renew_at = now + ttl * (1 - self.config.renew_fraction)

    def _identity(self) -> str:
        c = self.config
        if c.auth_method == "approle":
            return f"AppRole {c.approle_role_id!r}"
        if c.auth_method == "kubernetes":
            return f"Kubernetes role {c.kubernetes_role!r}"
        return f"the token in {c.setting('token')}"


class _TokenRefused(Exception):
    pass


def _reason(exc: hvac.exceptions.VaultError) -> str:
    # hvac's message is the server's `errors` list: paths and reasons, never secret values.
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)[:300]
    return type(exc).__name__


class SecretStoreServiceSettings(ServiceSettings):
    """ServiceSettings of a service that keeps secrets in Vault or OpenBao
    (`EDRS_<SERVICE>_VAULT_*`)."""

    vault_address: str = Field(
        default="http://127.0.0.1:8200", description="URL of the Vault or OpenBao server"
    )
    vault_auth_method: AuthMethod = Field(
        default="token", description="token, approle or kubernetes"
    )
    vault_token: SecretStr | None = Field(default=None, description="token (auth method token)")
    vault_approle_role_id: str | None = None
    vault_approle_secret_id: SecretStr | None = None
    vault_approle_mount: str = "approle"
    vault_kubernetes_role: str | None = None
    vault_kubernetes_jwt_path: Path = SERVICE_ACCOUNT_TOKEN
    vault_kubernetes_mount: str = "kubernetes"
    vault_kv_mount: str = Field(default="secret", description="mount of the KV version 2 engine")
    vault_path_prefix: str = Field(
        default="edrs", description="folder under the mount that holds this fleet's secrets"
    )
    vault_namespace: str | None = None
    vault_ca_cert: Path | None = None
    vault_timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _vault_auth_complete(self) -> Self:
        method = self.vault_auth_method
        needed = {
            "token": ["vault_token"],
            "approle": ["vault_approle_role_id", "vault_approle_secret_id"],
            "kubernetes": ["vault_kubernetes_role"],
        }[method]
        missing = [self.env_name(n) for n in needed if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"{', '.join(missing)} required with {self.env_name('vault_auth_method')}={method}"
            )
        if self.vault_ca_cert is not None and not self.vault_ca_cert.is_file():
            raise ValueError(f"{self.env_name('vault_ca_cert')}: no file at {self.vault_ca_cert}")
        return self

    def vault_config(self) -> VaultConfig:
        names = (
            "token",
            "approle_role_id",
            "approle_secret_id",
            "kubernetes_role",
            "kubernetes_jwt_path",
        )
        return VaultConfig(
            address=self.vault_address,
            auth_method=self.vault_auth_method,
            token=self.vault_token,
            approle_role_id=self.vault_approle_role_id,
            approle_secret_id=self.vault_approle_secret_id,
            approle_mount=self.vault_approle_mount,
            kubernetes_role=self.vault_kubernetes_role,
            kubernetes_jwt_path=self.vault_kubernetes_jwt_path,
            kubernetes_mount=self.vault_kubernetes_mount,
            kv_mount=self.vault_kv_mount,
            path_prefix=self.vault_path_prefix,
            namespace=self.vault_namespace,
            ca_cert=self.vault_ca_cert,
            timeout_seconds=self.vault_timeout_seconds,
            setting_names={n: self.env_name(f"vault_{n}") for n in names},
        )
