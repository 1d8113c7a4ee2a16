"""Maintenance of episodic and working memory: monthly partitions, episode retention, expiry.

Each run creates the partitions of the current and next month, drops whole monthly partitions
that ended before the retention cut-off, deletes the remaining expired episodes (from the
partition the cut-off falls in, and from the DEFAULT partition), and deletes expired
working-memory items from PostgreSQL (Redis expires its own).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from edrs_events.pg import Connection

log = logging.getLogger("edrs.memory.retention")

# Only one replica maintains at a time; the others skip the run.
_LOCK = 0x6D656D5F726574  # "mem_ret"
_PARTITION = re.compile(r"^episodes_y(?P<year>\d{4})m(?P<month>\d{2})$")


@dataclass(kw_only=True)
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    episodes_deleted: int = 0
    working_items_deleted: int = 0
    skipped: bool = False


def month_start(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"episodes_y{start.year:04d}m{start.month:02d}"


async def ensure_month_partition(conn: Connection, start: datetime) -> bool:
    """Create the partition of the month starting at `start`; True when it was created.

    Rows of that month already in the DEFAULT partition move into it first: PostgreSQL refuses
    a new partition whose range the DEFAULT partition holds rows of. The DEFAULT partition is
    locked for the move, so no insert lands there in between.
    """
    name = partition_name(start)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        return False
    low, high = start.isoformat(), next_month(start).isoformat()
    async with conn.transaction():
        await conn.execute("LOCK TABLE episodes_default IN ACCESS EXCLUSIVE MODE")
        await conn.execute(
            f"CREATE TABLE {name} (LIKE episodes INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await conn.execute(
            f"""WITH moved AS (
                    DELETE FROM episodes_default WHERE created_at >= $1 AND created_at < $2
                    RETURNING *)
                INSERT INTO {name} SELECT * FROM moved""",
            start,
            next_month(start),
        )
        await conn.execute(
            f"ALTER TABLE episodes ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')"
        )
    log.info("created episode partition %s", name)
    return True


async def maintain(
    db: asyncpg.Pool, *, retention_days: int, now: datetime | None = None
) -> MaintenanceReport:
    """One maintenance run (see the module docstring); `now` is for tests."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    report = MaintenanceReport()
    async with db.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            report.skipped = True
            return report
        try:
            this_month = month_start(now)
            for start in (this_month, next_month(this_month)):
                if await ensure_month_partition(conn, start):
                    report.created.append(partition_name(start))
            names = await conn.fetch(
                """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'episodes'::regclass"""
            )
            for (name,) in names:
                match = _PARTITION.match(name)
                if match is None:
                    continue
                start = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
                if next_month(start) <= cutoff:
                    await conn.execute(f"DROP TABLE {name}")
                    report.dropped.append(name)
                    log.info("dropped episode partition %s (older than %s)", name, cutoff)
            status = await conn.execute("DELETE FROM episodes WHERE created_at < $1", cutoff)
            report.episodes_deleted = int(status.split()[-1])
            status = await conn.execute("DELETE FROM working_items WHERE expires_at <= $1", now)
            report.working_items_deleted = int(status.split()[-1])
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return report


async def run_maintenance(db: asyncpg.Pool, *, retention_days: int, interval: float) -> None:
    """Maintain every `interval` seconds for the life of the service (the start-up run is
    awaited by build(), so this month's partition exists before the first call)."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await maintain(db, retention_days=retention_days)
            if report.dropped or report.episodes_deleted or report.working_items_deleted:
                log.info(
                    "memory maintenance",
                    extra={
                        "dropped": report.dropped,
                        "episodes_deleted": report.episodes_deleted,
                        "working_items_deleted": report.working_items_deleted,
                    },
                )
        except (asyncpg.PostgresError, OSError):
            log.warning("memory maintenance failed; retrying next interval", exc_info=True)
