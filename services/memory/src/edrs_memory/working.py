"""Working memory: per conversation, hot in Redis, written through to PostgreSQL.

Policy: each item lives `ttl` seconds (default 3,600); a conversation keeps at most `max_items`
(default 1,000), evicting the lowest priority first, then the oldest. Redis decides evictions
atomically (one Lua script adds and evicts); PostgreSQL is written first and loses the evicted
items after. When Redis has lost a conversation (restart, flush), the next read or write rebuilds
it from PostgreSQL: a marker key says "this conversation is fully loaded".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from edrs_core.clock import Clock
from edrs_core.ids import new_id
from redis.asyncio import Redis

from edrs_memory.store import Scope, WorkingItem
from edrs_memory.store.postgres import PostgresMemoryStore

# Ordering score: priority first, then age. Milliseconds since 1970 stay below 1e13 until 2286,
# and 5e13 + 1e13 is well inside a double's exact integers.
_PRIORITY_WEIGHT = 10**13

# KEYS: items (hash id -> json), order (zset by priority then age), expiry (zset by expiry ms),
# loaded (marker). ARGV: now ms, max items, mode ("add" | "load"), then id, json, order score,
# expiry ms per item. Returns the ids removed (expired or evicted), or nil in "add" mode when
# Redis does not hold the conversation (the caller rebuilds it with "load").
_ADD = """
if ARGV[3] == 'add' and redis.call('EXISTS', KEYS[4]) == 0 then
  return false
end
local removed = {}
local function drop(ids)
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    table.insert(removed, id)
  end
end
drop(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1]))
for i = 4, #ARGV, 4 do
  if tonumber(ARGV[i + 3]) > tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
    redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i])
  end
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then
  drop(redis.call('ZRANGE', KEYS[2], 0, over - 1))
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
else
  redis.call('SET', KEYS[4], '1')
  for k = 1, 4 do
    redis.call('PEXPIREAT', KEYS[k], last[2])
  end
end
return removed
"""

# KEYS as above; ARGV: now ms. The live items (expired ones dropped), or nil when not loaded.
_LIST = """
if redis.call('EXISTS', KEYS[4]) == 0 then
  return false
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return redis.call('HVALS', KEYS[1])
"""


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def _encode(item: WorkingItem) -> str:
    return json.dumps(
        {
            "id": str(item.id),
            "persona_id": str(item.persona_id),
            "user_id": item.user_id,
            "conversation_id": item.conversation_id,
            "text": item.text,
            "priority": item.priority,
            "kind": item.kind,
            "role": item.role,
            "created_at": _ms(item.created_at),
            "expires_at": _ms(item.expires_at),
        }
    )


def _decode(raw: bytes | str) -> WorkingItem:
    d: dict[str, Any] = json.loads(raw)
    return WorkingItem(
        id=UUID(d["id"]),
        persona_id=UUID(d["persona_id"]),
        user_id=d["user_id"],
        conversation_id=d["conversation_id"],
        text=d["text"],
        priority=d["priority"],
        kind=d["kind"],
        role=d["role"],
        created_at=_from_ms(d["created_at"]),
        expires_at=_from_ms(d["expires_at"]),
    )


class WorkingMemory:
    def __init__(
        self,
        redis: Redis,
        store: PostgresMemoryStore,
        *,
        default_ttl: int,
        max_items: int,
        clock: Clock,
        prefix: str = "edrs:memory:wm",
    ) -> None:
        self.redis = redis
        # What "expired" is judged by (items carry their expiry time; tests hold this clock).
        self.clock = clock
        self.store = store
        self.default_ttl = default_ttl
        self.max_items = max_items
        self.prefix = prefix
        self._add = redis.register_script(_ADD)
        self._list = redis.register_script(_LIST)

    def keys(self, scope: Scope, conversation_id: str) -> list[str]:
        # One hash tag for the four keys, so they live on one Redis Cluster slot.
        tag = f"{{{scope.client_id}|{scope.persona_id}|{scope.user_id}|{conversation_id}}}"
        return [f"{self.prefix}:{tag}:{part}" for part in ("items", "order", "expiry", "loaded")]

    def new_item(
        self,
        scope: Scope,
        conversation_id: str,
        text: str,
        *,
        priority: int,
        kind: str,
        role: str,
        ttl_seconds: int = 0,
        now: datetime | None = None,
    ) -> WorkingItem:
        # Millisecond precision, the same in Redis and PostgreSQL.
        created = now or self.clock.now()
        created = created.replace(microsecond=created.microsecond // 1000 * 1000)
        return WorkingItem(
            id=new_id(),
            persona_id=scope.persona_id,
            user_id=scope.user_id,
            conversation_id=conversation_id,
            text=text,
            priority=priority,
            kind=kind,
            role=role,
            created_at=created,
            expires_at=created + timedelta(seconds=ttl_seconds or self.default_ttl),
        )

    async def publish(
        self, scope: Scope, conversation_id: str, items: Sequence[WorkingItem]
    ) -> None:
        """Bring items already committed to PostgreSQL into Redis, evicting beyond the maximum."""
        removed = await self._run_add(scope, conversation_id, items, mode="add")
        if removed is None:
            await self._rebuild(scope, conversation_id)
        else:
            await self.store.delete_working_items(scope.client_id, removed)

    async def live_items(
        self, scope: Scope, conversation_id: str, limit: int = 0
    ) -> list[WorkingItem]:
        """Live items, oldest first; with `limit`, the newest `limit` of them."""
        now = self.clock.now()
        raw = await self._list(keys=self.keys(scope, conversation_id), args=[_ms(now)])
        if raw is None:
            items = await self._rebuild(scope, conversation_id)
        else:
            items = [_decode(r) for r in raw]
        items = [i for i in items if i.expires_at > now]
        items.sort(key=lambda i: (i.created_at, i.id))
        return items[-limit:] if limit else items

    async def drop(self, scope: Scope, conversation_ids: Sequence[str]) -> None:
        for conversation_id in conversation_ids:
            await self.redis.delete(*self.keys(scope, conversation_id))

    async def drop_user(
        self, client_id: str, user_id: str, known: Sequence[tuple[UUID, str]] = ()
    ) -> int:
        """Delete a user's hot working memory with every persona: the `known` (persona,
        conversation) pairs, and whatever else Redis holds of them (found by a SCAN, since a
        conversation's keys can outlive its durable rows until they expire). Returns how many
        keys went."""
        keys: set[str] = set()
        for persona_id, conversation_id in known:
            keys.update(self.keys(Scope(client_id=client_id, persona_id=persona_id,
                                        user_id=user_id), conversation_id))  # fmt: skip
        # The tag is {client|persona|user|conversation}; the persona is a UUID, so what follows
        # it up to the next "|" is the user exactly (user ids from the gateway hold no "|").
        start = f"{self.prefix}:{{{client_id}|"
        pattern = f"{_glob_escape(start)}*"
        async for raw in self.redis.scan_iter(match=pattern, count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            rest = key[len(start) :]
            if rest[36:].startswith(f"|{user_id}|"):
                keys.add(key)
        if keys:
            await self.redis.delete(*sorted(keys))
        return len(keys)

    async def _rebuild(self, scope: Scope, conversation_id: str) -> list[WorkingItem]:
        live = await self.store.live_working_items(scope, conversation_id, self.clock.now())
        removed = await self._run_add(scope, conversation_id, live, mode="load")
        await self.store.delete_working_items(scope.client_id, removed or [])
        gone = set(removed or [])
        return [i for i in live if i.id not in gone]

    async def _run_add(
        self, scope: Scope, conversation_id: str, items: Sequence[WorkingItem], *, mode: str
    ) -> list[UUID] | None:
        args: list[Any] = [_ms(self.clock.now()), self.max_items, mode]
        for item in items:
            args += [
                str(item.id),
                _encode(item),
                item.priority * _PRIORITY_WEIGHT + _ms(item.created_at),
                _ms(item.expires_at),
            ]
        removed = await self._add(keys=self.keys(scope, conversation_id), args=args)
        if removed is None:
            return None
        return [UUID(r.decode() if isinstance(r, bytes) else r) for r in removed]


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
