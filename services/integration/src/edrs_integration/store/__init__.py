"""The connector store port: what the integration service needs from its datastore, whatever the
engine. Secrets cross the port in clear; each adapter keeps them encrypted at rest."""

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
    # Settings whose key names a secret ("api_token", "password", ...), in clear.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    enabled: bool = False


@dataclass(frozen=True, kw_only=True)
class Connector(NewConnector):
    id: UUID
    created_at: datetime


class ConnectorStore(Protocol):
    async def create(self, client_id: str, connector: NewConnector) -> Connector:
        """Raises AlreadyExists when the tenant has a connector of that name, ignoring case."""
        ...

    async def get(self, client_id: str, connector_id: UUID) -> Connector | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Connector], str]: ...
