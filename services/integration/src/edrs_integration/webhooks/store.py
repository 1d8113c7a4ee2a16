"""Webhook subscriptions, deliveries and their attempts in PostgreSQL; signing secrets in the
secret store. Every query names the tenant, except the dispatcher's claim of due deliveries,
which works across tenants and carries each row's tenant with it."""

from __future__ import annotations

import fnmatch
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page
from edrs_core.secretstore import SecretStore
from edrs_events import BaseEvent

# Woken on commit of a transaction that queued deliveries (LISTEN/NOTIFY reaches every replica).
NOTIFY_CHANNEL = "edrs_webhook_deliveries"
_SUB_COLUMNS = (
    "id, client_id, url, event_types, description, enabled, secret_version, "
    "previous_secret_expires_at, created_at, updated_at"
)
_DELIVERY_COLUMNS = (
    "id, client_id, subscription_id, event_id, event_type, state, round_attempts, "
    "next_attempt_at, created_at"
)

log = logging.getLogger("edrs.integration.webhooks")


def msg_id(delivery_id: UUID) -> str:
    """The `webhook-id` of a delivery."""
    return f"msg_{delivery_id.hex}"


def delivery_uuid(webhook_id: str) -> UUID | None:
    try:
        return UUID(hex=webhook_id.removeprefix("msg_")) if webhook_id.startswith("msg_") else None
    except ValueError:
        return None


def subscription_secret_path(client_id: str, subscription_id: UUID) -> tuple[str, ...]:
    return ("tenants", client_id, "webhooks", str(subscription_id))


def matches(patterns: Sequence[str], event_type: str) -> bool:
    return any(p in ("*", ">") or fnmatch.fnmatchcase(event_type, p) for p in patterns)


@dataclass(frozen=True, kw_only=True)
class Subscription:
    id: UUID
    client_id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    secret_version: int
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Attempt:
    number: int
    attempted_at: datetime
    status_code: int
    error: str
    latency_ms: int


@dataclass(frozen=True, kw_only=True)
class Delivery:
    id: UUID
    client_id: str
    subscription_id: UUID
    event_id: str
    event_type: str
    state: str
    round_attempts: int
    next_attempt_at: datetime
    created_at: datetime
    attempts: tuple[Attempt, ...] = ()

    @property
    def webhook_id(self) -> str:
        return msg_id(self.id)


@dataclass(frozen=True, kw_only=True)
class DueDelivery:
    """A claimed delivery with what sending it needs."""

    id: UUID
    client_id: str
    subscription_id: UUID
    url: str
    body: bytes
    round_attempts: int
    attempts_total: int
    secret_version: int
    previous_secret_expires_at: datetime | None


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        client_id=row["client_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        secret_version=row["secret_version"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery(row: Any, attempts: Sequence[Attempt] = ()) -> Delivery:
    return Delivery(
        id=row["id"],
        client_id=row["client_id"],
        subscription_id=row["subscription_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        state=row["state"],
        round_attempts=row["round_attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        attempts=tuple(attempts),
    )


def event_body(event: BaseEvent) -> bytes:
    """What a subscriber receives: Standard Webhooks' {type, timestamp, data} and the event id."""
    return json.dumps(
        {
            "type": event.event_type,
            "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "id": str(event.event_id),
            "data": event.payload,
        },
        separators=(",", ":"),
        default=str,
    ).encode()


async def enqueue_deliveries(conn: Any, event: BaseEvent, now: datetime) -> int:
    """Queue `event` for each of its tenant's enabled subscriptions to its type, in `conn`'s
    transaction (the consumer's inbox transaction); returns how many were queued."""
    if not event.client_id:
        return 0
    subs = await conn.fetch(
        "SELECT id, event_types FROM webhook_subscriptions WHERE client_id = $1 AND enabled",
        event.client_id,
    )
    targets = [s["id"] for s in subs if matches(s["event_types"], event.event_type)]
    if not targets:
        return 0
    body = event_body(event).decode()
    inserted = await conn.fetch(
        """INSERT INTO webhook_deliveries
               (id, client_id, subscription_id, event_id, event_type, body, next_attempt_at,
                created_at)
           SELECT t.id, $1, t.subscription_id, $2, $3, $4, $5, $5
           FROM unnest($6::uuid[], $7::uuid[]) AS t (id, subscription_id)
           ON CONFLICT (subscription_id, event_id) DO NOTHING
           RETURNING id""",
        event.client_id,
        str(event.event_id),
        event.event_type,
        body,
        now,
        [new_id() for _ in targets],
        targets,
    )
    if not inserted:
        return 0
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return len(inserted)


class WebhookStore:
    def __init__(self, db: asyncpg.Pool, secrets: SecretStore, cache_size: int = 10_000) -> None:
        self.db = db
        self.secrets = secrets
        # Signing secrets by (subscription, version): a rotation writes a new version, so a cached
        # entry is never stale.
        self._secret_cache: OrderedDict[tuple[UUID, int], dict[str, str]] = OrderedDict()
        self._cache_size = cache_size

    # -- subscriptions --------------------------------------------------------------------------

    async def create_subscription(
        self,
        client_id: str,
        *,
        url: str,
        event_types: Sequence[str],
        description: str,
        enabled: bool,
        secret: str,
        now: datetime,
    ) -> Subscription:
        sub_id = new_id()
        path = subscription_secret_path(client_id, sub_id)
        version = await self.secrets.put(path, {"current": secret})
        try:
            row = await self.db.fetchrow(
                f"""INSERT INTO webhook_subscriptions
                        (id, client_id, url, event_types, description, enabled, secret_version,
                         created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                    RETURNING {_SUB_COLUMNS}""",
                sub_id,
                client_id,
                url,
                list(event_types),
                description,
                enabled,
                version,
                now,
            )
        except BaseException:
            await self.secrets.delete(path)
            raise
        return _subscription(row)

    async def get_subscription(self, client_id: str, sub_id: UUID) -> Subscription | None:
        row = await self.db.fetchrow(
            f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE client_id = $1 AND id = $2",
            client_id,
            sub_id,
        )
        return _subscription(row) if row else None

    async def list_subscriptions(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Subscription], str]:
        rows, token = await keyset_page(
            self.db,
            table="webhook_subscriptions",
            columns=_SUB_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_subscription(r) for r in rows], token

    async def update_subscription(
        self,
        client_id: str,
        sub_id: UUID,
        *,
        url: str | None,
        event_types: Sequence[str] | None,
        description: str | None,
        enabled: bool | None,
        now: datetime,
    ) -> Subscription | None:
        row = await self.db.fetchrow(
            f"""UPDATE webhook_subscriptions SET
                    url = coalesce($3, url),
                    event_types = coalesce($4, event_types),
                    description = coalesce($5, description),
                    enabled = coalesce($6, enabled),
                    updated_at = $7
                WHERE client_id = $1 AND id = $2
                RETURNING {_SUB_COLUMNS}""",
            client_id,
            sub_id,
            url,
            None if event_types is None else list(event_types),
            description,
            enabled,
            now,
        )
        return _subscription(row) if row else None

    async def delete_subscription(self, client_id: str, sub_id: UUID) -> bool:
        deleted = await self.db.fetchval(
            "DELETE FROM webhook_subscriptions WHERE client_id = $1 AND id = $2 RETURNING id",
            client_id,
            sub_id,
        )
        if deleted is None:
            return False
        await self.secrets.delete(subscription_secret_path(client_id, sub_id))
        return True

    async def rotate_secret(
        self,
        client_id: str,
        sub_id: UUID,
        *,
        secret: str,
        previous_ttl: timedelta,
        now: datetime,
    ) -> Subscription | None:
        current = await self.get_subscription(client_id, sub_id)
        if current is None:
            return None
        old = (await self._secrets_of(current))["current"]
        version = await self.secrets.put(
            subscription_secret_path(client_id, sub_id), {"current": secret, "previous": old}
        )
        row = await self.db.fetchrow(
            f"""UPDATE webhook_subscriptions SET secret_version = $3,
                    previous_secret_expires_at = $4, updated_at = $5
                WHERE client_id = $1 AND id = $2
                RETURNING {_SUB_COLUMNS}""",
            client_id,
            sub_id,
            version,
            now + previous_ttl,
            now,
        )
        return _subscription(row) if row else None

    async def _secrets_of(self, sub: Subscription | DueDelivery) -> dict[str, str]:
        sub_id = sub.id if isinstance(sub, Subscription) else sub.subscription_id
        key = (sub_id, sub.secret_version)
        cached = self._secret_cache.get(key)
        if cached is None:
            cached = await self.secrets.get(
                subscription_secret_path(sub.client_id, sub_id), sub.secret_version
            )
            self._secret_cache[key] = cached
            if len(self._secret_cache) > self._cache_size:
                self._secret_cache.popitem(last=False)
        else:
            self._secret_cache.move_to_end(key)
        return cached

    async def signing_secrets(self, due: DueDelivery, now: datetime) -> list[str]:
        """The current secret, and the previous one while it has not expired."""
        values = await self._secrets_of(due)
        found = [values["current"]]
        expires = due.previous_secret_expires_at
        if "previous" in values and expires is not None and now < expires:
            found.append(values["previous"])
        return found

    # -- deliveries ------------------------------------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueDelivery]:
        """Take up to `limit` due deliveries of enabled subscriptions: their next attempt is moved
        to the end of a lease, so another dispatcher does not take them, and a dispatcher that
        dies mid-attempt leaves them to be tried again when the lease ends."""
        rows = await self.db.fetch(
            """WITH due AS (
                   SELECT d.id FROM webhook_deliveries d
                   JOIN webhook_subscriptions s ON s.id = d.subscription_id
                   WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND s.enabled
                   ORDER BY d.next_attempt_at
                   LIMIT $2
                   FOR UPDATE OF d SKIP LOCKED)
               UPDATE webhook_deliveries d SET next_attempt_at = $3
               FROM due, webhook_subscriptions s
               WHERE d.id = due.id AND s.id = d.subscription_id
               RETURNING d.id, d.client_id, d.subscription_id, d.body, d.round_attempts,
                   (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id) AS total,
                   s.url, s.secret_version, s.previous_secret_expires_at""",
            now,
            limit,
            now + lease,
        )
        return [
            DueDelivery(
                id=r["id"],
                client_id=r["client_id"],
                subscription_id=r["subscription_id"],
                url=r["url"],
                body=r["body"].encode(),
                round_attempts=r["round_attempts"],
                attempts_total=r["total"],
                secret_version=r["secret_version"],
                previous_secret_expires_at=r["previous_secret_expires_at"],
            )
            for r in rows
        ]

    async def record_attempt(
        self,
        due: DueDelivery,
        *,
        attempted_at: datetime,
        status_code: int,
        error: str,
        latency_ms: int,
        state: str,
        next_attempt_at: datetime,
    ) -> None:
        try:
            async with self.db.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO webhook_attempts
                           (delivery_id, number, attempted_at, status_code, error, latency_ms)
                       VALUES ($1, $2, $3, $4, $5, $6)""",
                    due.id,
                    due.attempts_total + 1,
                    attempted_at,
                    status_code,
                    error[:500],
                    latency_ms,
                )
                await conn.execute(
                    """UPDATE webhook_deliveries SET state = $2, round_attempts = round_attempts + 1,
                           next_attempt_at = $3
                       WHERE id = $1""",
                    due.id,
                    state,
                    next_attempt_at,
                )
        except asyncpg.ForeignKeyViolationError:
            # The subscription was deleted while this attempt was in flight, and its deliveries
            # with it: nothing is left to record it against.
            log.info("delivery %s was deleted during its attempt; not recorded", due.id)

    async def next_due(self) -> datetime | None:
        value: datetime | None = await self.db.fetchval(
            """SELECT min(d.next_attempt_at) FROM webhook_deliveries d
               JOIN webhook_subscriptions s ON s.id = d.subscription_id
               WHERE d.state = 'pending' AND s.enabled"""
        )
        return value

    async def list_deliveries(
        self, client_id: str, sub_id: UUID, state: str | None, page_token: str, page_size: int
    ) -> tuple[list[Delivery], str]:
        where, args = "client_id = $1 AND subscription_id = $2", [client_id, sub_id]
        if state is not None:
            where += " AND state = $3"
            args.append(state)
        rows, token = await keyset_page(
            self.db,
            table="webhook_deliveries",
            columns=_DELIVERY_COLUMNS,
            where=where,
            args=args,
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        attempts = await self._attempts([r["id"] for r in rows])
        return [_delivery(r, attempts.get(r["id"], [])) for r in rows], token

    async def get_delivery(
        self, client_id: str, sub_id: UUID, delivery_id: UUID
    ) -> Delivery | None:
        row = await self.db.fetchrow(
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries
                WHERE client_id = $1 AND subscription_id = $2 AND id = $3""",
            client_id,
            sub_id,
            delivery_id,
        )
        if row is None:
            return None
        return _delivery(row, (await self._attempts([row["id"]])).get(row["id"], []))

    async def replay(
        self, client_id: str, sub_id: UUID, delivery_id: UUID, now: datetime
    ) -> Delivery | None:
        """Start the retry schedule again for this delivery (same id, same body)."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE webhook_deliveries SET state = 'pending', round_attempts = 0,
                        next_attempt_at = $4
                    WHERE client_id = $1 AND subscription_id = $2 AND id = $3
                    RETURNING {_DELIVERY_COLUMNS}""",
                client_id,
                sub_id,
                delivery_id,
                now,
            )
            if row is not None:
                await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        if row is None:
            return None
        return _delivery(row, (await self._attempts([row["id"]])).get(row["id"], []))

    async def _attempts(self, ids: Sequence[UUID]) -> dict[UUID, list[Attempt]]:
        if not ids:
            return {}
        rows = await self.db.fetch(
            """SELECT delivery_id, number, attempted_at, status_code, error, latency_ms
               FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY number""",
            list(ids),
        )
        found: dict[UUID, list[Attempt]] = {}
        for r in rows:
            found.setdefault(r["delivery_id"], []).append(
                Attempt(
                    number=r["number"],
                    attempted_at=r["attempted_at"],
                    status_code=r["status_code"],
                    error=r["error"],
                    latency_ms=r["latency_ms"],
                )
            )
        return found
