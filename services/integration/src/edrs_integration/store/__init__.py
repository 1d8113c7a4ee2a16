"""The connector store port: what the integration service needs from its datastore, whatever the
engine. The database keeps which keys are secret and a reference to their values in the secret
store (edrs_core.secretstore); values cross this port only on the way in, and are read back from
the secret store by whoever needs them (`secret_values`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewConnector:
    name: str
    kind: str
    # Settings that are not secret, e.g. "url".
    config: dict[str, str] = field(default_factory=dict)
    # Settings whose key names a secret ("api_token", "password", ...), in clear: written to the
    # secret store, never to the database.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    enabled: bool = False


@dataclass(frozen=True, kw_only=True)
class Connector:
    id: UUID
    client_id: str
    name: str
    kind: str
    config: dict[str, str]
    # Names of the secret settings; their values are in the secret store.
    secret_keys: frozenset[str]
    # The secret store's version of the values; None when the connector has no secrets.
    secret_version: int | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class ConnectorUpdate:
    """What an update changes; None leaves a field as it is. `secrets` are merged into the stored
    ones (a new version in the secret store); `remove_secrets` names secret keys to drop."""

    name: str | None = None
    config: dict[str, str] | None = None
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    remove_secrets: frozenset[str] = frozenset()
    enabled: bool | None = None


class ConnectorStore(Protocol):
    async def create(self, client_id: str, connector: NewConnector) -> Connector:
        """Raises AlreadyExists when the tenant has a connector of that name, ignoring case."""
        ...

    async def get(self, client_id: str, connector_id: UUID) -> Connector | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Connector], str]: ...

    async def update(
        self, client_id: str, connector_id: UUID, update: ConnectorUpdate
    ) -> Connector | None: ...

    async def delete(self, client_id: str, connector_id: UUID) -> bool: ...

    async def secret_values(self, connector: Connector) -> dict[str, str]:
        """The connector's secret values, read from the secret store."""
        ...
