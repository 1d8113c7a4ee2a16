"""The maintenance job against back-dated rows: monthly partitions, retention, expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from edrs_core.testing import wait_until
from edrs_memory.retention import (
    ensure_month_partition,
    maintain,
    month_start,
    next_month,
    partition_name,
)
from edrs_memory.store import NewEpisode, Scope, WorkingItem

pytestmark = pytest.mark.integration


def test_months_roll_over_the_year() -> None:
    assert next_month(datetime(2025, 12, 1, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert month_start(datetime(2025, 6, 17, 9, tzinfo=UTC)) == datetime(2025, 6, 1, tzinfo=UTC)
    assert partition_name(datetime(2025, 6, 1, tzinfo=UTC)) == "episodes_y2025m06"


async def test_maintenance_drops_old_partitions_and_deletes_expired_rows(store) -> None:
    now = datetime.now(UTC)
    persona = uuid.uuid4()
    scope = Scope(client_id="tenant-retention", persona_id=persona, user_id="u")
    old_month = month_start(now - timedelta(days=200))
    async with store.db.acquire() as conn:
        await ensure_month_partition(conn, old_month)
    vector = [1.0] + [0.0] * 383

    def episode(text: str) -> NewEpisode:
        return NewEpisode(persona_id=persona, user_id="u", text=text, importance=0.5)

    await store.bulk_load_episodes(
        scope.client_id,
        [
            (episode("200 days old"), vector, now - timedelta(days=200)),
            (episode("95 days old"), vector, now - timedelta(days=95)),
            (episode("10 days old"), vector, now - timedelta(days=10)),
            (episode("fresh"), vector, now),
        ],
    )
    report = await maintain(store.db, retention_days=90, now=now)
    # The service's start-up run finished before the fixture yielded, so nothing holds the lock.
    assert not report.skipped

    assert partition_name(old_month) in report.dropped
    assert partition_name(month_start(now)) not in report.dropped
    kept = await store.recall_candidates(
        scope, vector, exclude_conversation_id="", nearest=10, recent=10
    )
    assert sorted(c.episode.text for c in kept) == ["10 days old", "fresh"]
    assert [c.similarity for c in kept] == [pytest.approx(1.0)] * 2
    async with store.db.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass($1)", partition_name(old_month)) is None
        for start in (month_start(now), next_month(month_start(now))):
            assert await conn.fetchval("SELECT to_regclass($1)", partition_name(start)) is not None


async def test_new_partition_takes_its_month_out_of_the_default_partition(store) -> None:
    persona = uuid.uuid4()
    scope = Scope(client_id="tenant-retention", persona_id=persona, user_id="u")
    # A month no partition covers yet: its rows land in the DEFAULT partition.
    when = datetime(2031, 3, 15, tzinfo=UTC)
    await store.bulk_load_episodes(
        scope.client_id,
        [
            (
                NewEpisode(persona_id=persona, user_id="u", text="future", importance=0.5),
                [0.0] * 383 + [1.0],
                when,
            )
        ],
    )
    async with store.db.acquire() as conn:
        assert await ensure_month_partition(conn, month_start(when))
        where = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM episodes WHERE persona_id = $1", persona
        )
        assert where == "episodes_y2031m03"
        assert not await ensure_month_partition(conn, month_start(when))
        await conn.execute("DROP TABLE episodes_y2031m03")


async def test_maintenance_deletes_expired_working_items(store) -> None:
    now = datetime.now(UTC)
    persona = uuid.uuid4()
    item = WorkingItem(
        id=uuid.uuid4(),
        persona_id=persona,
        user_id="u",
        conversation_id="c",
        text="expired",
        priority=3,
        kind="note",
        role="",
        created_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1),
    )
    async with store.transaction() as conn:
        await store.add_working_items(conn, "tenant-retention", [item])
    reports = []

    async def maintained() -> bool:
        # Skipped while another run holds the lock; that run is over within the deadline.
        reports.append(await maintain(store.db, retention_days=90, now=now))
        return not reports[-1].skipped

    await wait_until(maintained, 60, "a maintenance run that is not skipped")
    assert reports[-1].working_items_deleted >= 1
    async with store.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM working_items WHERE id = $1", item.id) == 0
