"""PostgreSQL adapter of the connector store; secrets are Fernet-encrypted inside the config column."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_integration.credentials import SecretCipher
from edrs_integration.store import Connector, NewConnector

_COLUMNS = "id, name, kind, config, enabled, created_at"
# In the config column a plain value is a JSON string and a secret is {"fernet": "<token>"}:
# the row says which values are encrypted, whatever rule picked them when it was written.
_SEALED = "fernet"


class PostgresConnectorStore:
    def __init__(self, db: asyncpg.Pool, cipher: SecretCipher, events: ServiceEvents) -> None:
        self.db = db
        self.cipher = cipher
        self.events = events

    def _connector(self, row: Any) -> Connector:
        stored: dict[str, Any] = json.loads(row["config"])
        return Connector(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            config={k: v for k, v in stored.items() if isinstance(v, str)},
            secrets={
                k: self.cipher.decrypt(v[_SEALED]) for k, v in stored.items() if isinstance(v, dict)
            },
            enabled=row["enabled"],
            created_at=row["created_at"],
        )

    async def create(self, client_id: str, connector: NewConnector) -> Connector:
        stored: dict[str, Any] = {
            **connector.config,
            **{k: {_SEALED: self.cipher.encrypt(v)} for k, v in connector.secrets.items()},
        }
        try:
            # The connector and its `integration.connector_created` event commit together.
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""INSERT INTO connectors (id, client_id, name, kind, config, enabled)
                        VALUES ($1, $2, $3, $4, $5::jsonb, $6)
                        RETURNING {_COLUMNS}""",
                    new_id(),
                    client_id,
                    connector.name,
                    connector.kind,
                    json.dumps(stored),
                    connector.enabled,
                )
                assert row is not None  # INSERT ... RETURNING yields the row
                await self.events.add(
                    conn,
                    "integration.connector_created",
                    {"connector_id": str(row["id"]), "kind": row["kind"], "name": row["name"]},
                    aggregate_id=str(row["id"]),
                )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                f"a connector named {connector.name!r} already exists (names are compared "
                "ignoring case)",
                field="name",
            ) from None
        return self._connector(row)

    async def get(self, client_id: str, connector_id: UUID) -> Connector | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM connectors WHERE client_id = $1 AND id = $2",
            client_id,
            connector_id,
        )
        return self._connector(row) if row else None

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Connector], str]:
        rows, token = await keyset_page(
            self.db,
            table="connectors",
            columns=_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [self._connector(r) for r in rows], token
