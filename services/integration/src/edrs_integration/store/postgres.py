"""PostgreSQL adapter of the connector store; secret values live in the secret store, the row keeps
their key names and the secret store's version."""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page
from edrs_core.secrets import SecretCipher
from edrs_core.secretstore import SecretNotFound, SecretStore

from edrs_integration.store import Connector, ConnectorUpdate, NewConnector

log = logging.getLogger("edrs.integration.store")

_COLUMNS = (
    "id, client_id, name, kind, config, secret_keys, secret_version, enabled, created_at, "
    "updated_at"
)
# Rows written before secrets moved to the secret store hold them as {"fernet": "<token>"}.
_SEALED = "fernet"


def connector_secret_path(client_id: str, connector_id: UUID) -> tuple[str, ...]:
    """Where a connector's secret values live in the secret store."""
    return ("tenants", client_id, "connectors", str(connector_id))


def _duplicate(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"a connector named {name!r} already exists (names are compared ignoring case)",
        field="name",
    )


class PostgresConnectorStore:
    def __init__(self, db: asyncpg.Pool, secrets: SecretStore, events: ServiceEvents) -> None:
        self.db = db
        self.secrets = secrets
        self.events = events

    @staticmethod
    def _connector(row: Any) -> Connector:
        stored: dict[str, Any] = json.loads(row["config"])
        return Connector(
            id=row["id"],
            client_id=row["client_id"],
            name=row["name"],
            kind=row["kind"],
            config={k: v for k, v in stored.items() if isinstance(v, str)},
            secret_keys=frozenset(row["secret_keys"]),
            secret_version=row["secret_version"],
            enabled=row["enabled"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def create(self, client_id: str, connector: NewConnector) -> Connector:
        connector_id = new_id()
        path = connector_secret_path(client_id, connector_id)
        version = await self.secrets.put(path, connector.secrets) if connector.secrets else None
        try:
            # The connector and its `integration.connector_created` event commit together.
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""INSERT INTO connectors
                            (id, client_id, name, kind, config, secret_keys, secret_version,
                             enabled)
                        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)
                        RETURNING {_COLUMNS}""",
                    connector_id,
                    client_id,
                    connector.name,
                    connector.kind,
                    json.dumps(connector.config),
                    sorted(connector.secrets),
                    version,
                    connector.enabled,
                )
                assert row is not None  # INSERT ... RETURNING yields the row
                await self.events.add(
                    conn,
                    "integration.connector_created",
                    {"connector_id": str(row["id"]), "kind": row["kind"], "name": row["name"]},
                    aggregate_id=str(row["id"]),
                )
        except BaseException as exc:
            # No row refers to them: do not leave the values behind.
            if version is not None:
                await self.secrets.delete(path)
            if isinstance(exc, asyncpg.UniqueViolationError):
                raise _duplicate(connector.name) from None
            raise
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

    async def update(
        self, client_id: str, connector_id: UUID, update: ConnectorUpdate
    ) -> Connector | None:
        current = await self.get(client_id, connector_id)
        if current is None:
            return None
        keys = (current.secret_keys | set(update.secrets)) - update.remove_secrets
        version = current.secret_version
        path = connector_secret_path(client_id, connector_id)
        rotated = bool(update.secrets or (update.remove_secrets & current.secret_keys))
        if rotated:
            values = await self.secret_values(current)
            values = {k: v for k, v in {**values, **update.secrets}.items() if k in keys}
            # A new version: the previous values stay readable by version until destroyed.
            version = await self.secrets.put(path, values)
        changed = [
            name
            for name, value in (
                ("name", update.name),
                ("config", update.config),
                ("enabled", update.enabled),
            )
            if value is not None
        ]
        try:
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""UPDATE connectors SET
                            name = coalesce($3, name),
                            config = coalesce($4::jsonb, config),
                            enabled = coalesce($5, enabled),
                            secret_keys = $6,
                            secret_version = $7,
                            updated_at = now()
                        WHERE client_id = $1 AND id = $2
                        RETURNING {_COLUMNS}""",
                    client_id,
                    connector_id,
                    update.name,
                    None if update.config is None else json.dumps(update.config),
                    update.enabled,
                    sorted(keys),
                    version if keys else None,
                )
                if row is None:
                    return None
                await self.events.add(
                    conn,
                    "integration.connector_updated",
                    {
                        "connector_id": str(connector_id),
                        "kind": row["kind"],
                        "changed": changed,
                        "credentials_rotated": rotated,
                    },
                    aggregate_id=str(connector_id),
                )
        except asyncpg.UniqueViolationError:
            raise _duplicate(update.name or current.name) from None
        if not keys and current.secret_keys:
            await self.secrets.delete(path)
        return self._connector(row)

    async def delete(self, client_id: str, connector_id: UUID) -> bool:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM connectors WHERE client_id = $1 AND id = $2 RETURNING kind",
                client_id,
                connector_id,
            )
            if row is None:
                return False
            await self.events.add(
                conn,
                "integration.connector_deleted",
                {"connector_id": str(connector_id), "kind": row["kind"]},
                aggregate_id=str(connector_id),
            )
        await self.secrets.delete(connector_secret_path(client_id, connector_id))
        return True

    async def secret_values(self, connector: Connector) -> dict[str, str]:
        if not connector.secret_keys or connector.secret_version is None:
            return {}
        try:
            values = await self.secrets.get(
                connector_secret_path(connector.client_id, connector.id), connector.secret_version
            )
        except SecretNotFound:
            return {}
        return {k: v for k, v in values.items() if k in connector.secret_keys}

    async def move_sealed_secrets(self, cipher: SecretCipher | None, setting: str) -> int:
        """Move secrets that rows written before the secret store hold Fernet-sealed in their
        config into the secret store; returns how many connectors moved. Needs `cipher` (keyed
        from `setting`) only when there is such a row."""
        rows = await self.db.fetch(
            """SELECT id, client_id, config FROM connectors
               WHERE EXISTS (SELECT 1 FROM jsonb_each(config) e
                             WHERE jsonb_typeof(e.value) = 'object')"""
        )
        if rows and cipher is None:
            raise RuntimeError(
                f"{len(rows)} connectors hold secrets sealed with the former credentials key: "
                f"set {setting} once so they can be moved into the secret store"
            )
        for row in rows:
            assert cipher is not None
            stored: dict[str, Any] = json.loads(row["config"])
            sealed = {
                k: cipher.decrypt(v[_SEALED]) for k, v in stored.items() if isinstance(v, dict)
            }
            plain = {k: v for k, v in stored.items() if isinstance(v, str)}
            version = await self.secrets.put(
                connector_secret_path(row["client_id"], row["id"]), sealed
            )
            await self.db.execute(
                """UPDATE connectors SET config = $2::jsonb, secret_keys = $3, secret_version = $4
                   WHERE id = $1""",
                row["id"],
                json.dumps(plain),
                sorted(sealed),
                version,
            )
        if rows:
            log.info("moved the secrets of %d connectors into the secret store", len(rows))
        return len(rows)
