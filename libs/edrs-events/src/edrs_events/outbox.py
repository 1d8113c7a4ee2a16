"""Transactional outbox: `Outbox.add` writes events in the caller's transaction; the DDL."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from edrs_events.bus import WireMessage
from edrs_events.catalog import SchemaCatalog, default_catalog
from edrs_events.envelope import BaseEvent
from edrs_events.pg import Connection
from edrs_events.tracing import publish_span

if TYPE_CHECKING:
    pass

OUTBOX_TABLE = "edrs_outbox"
OUTBOX_CHANNEL = "edrs_outbox"
_COLUMNS = ("event_id", "event_type", "priority", "client_id", "aggregate_id", "body")
# Serialises concurrent installs: CREATE ... IF NOT EXISTS alone races on the catalog tables.
_INSTALL_LOCK = 0x0ED5_0B0C


def sql(name: str) -> str:
    """The packaged DDL `outbox.sql` or `inbox.sql`, for a service's own migrations."""
    return resources.files("edrs_events").joinpath(f"sql/{name}").read_text("utf-8")


async def install_outbox(conn: Connection) -> None:
    """Create the outbox table and its NOTIFY trigger if missing (idempotent)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _INSTALL_LOCK)
        await conn.execute(sql("outbox.sql"))


class Outbox:
    """Writes events to the outbox table inside the caller's transaction, validated first."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()

    def _row(self, event: BaseEvent, aggregate_id: str | None) -> tuple[object, ...]:
        self.catalog.validate(event)
        # The trace context is captured here, in the request that caused the event.
        with publish_span(event) as stamped:
            m = WireMessage.of(stamped, aggregate_id=aggregate_id)
        return (stamped.event_id, m.event_type, m.priority.value, m.client_id, aggregate_id, m.body)

    async def add(
        self, conn: Connection, event: BaseEvent, *, aggregate_id: str | None = None
    ) -> None:
        """Insert one event; commits or rolls back with the caller's transaction."""
        await conn.execute(
            f"INSERT INTO {OUTBOX_TABLE} ({', '.join(_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6)",
            *self._row(event, aggregate_id),
        )

    async def add_many(
        self,
        conn: Connection,
        events: Sequence[BaseEvent],
        *,
        aggregate_id: str | None = None,
    ) -> None:
        """Insert many events with one COPY (one NOTIFY), in the caller's transaction."""
        rows = [self._row(event, aggregate_id) for event in events]
        await conn.copy_records_to_table(OUTBOX_TABLE, records=rows, columns=list(_COLUMNS))

    @staticmethod
    async def forget_user(conn: Connection, client_id: str, user_id: str) -> int:
        """Delete the tenant's already-sent events about one user (payload `user_id`), in the
        caller's transaction: an erased user's words must not wait out the retention here.
        Unsent rows stay, so nothing due to the bus is lost. Returns how many went."""
        status = await conn.execute(
            f"""DELETE FROM {OUTBOX_TABLE}
                WHERE client_id = $1 AND sent_at IS NOT NULL
                  AND convert_from(body, 'UTF8')::jsonb #>> '{{payload,user_id}}' = $2""",
            client_id,
            user_id,
        )
        return int(status.split()[-1])

    @staticmethod
    async def pending(conn: Connection) -> int:
        """How many events wait for the relay."""
        return int(
            await conn.fetchval(f"SELECT count(*) FROM {OUTBOX_TABLE} WHERE sent_at IS NULL")
        )
