"""The events of a streamed turn, kept in Redis so a client that lost its stream (a page reloaded
mid-reply, a dropped connection) picks it up again with no text lost or repeated.

A turn streamed over SSE runs in a task of its own that appends each event (`accepted`,
`queued`, `started`, `delta`..., then `completed` or `error`) to a Redis stream, one per turn; a
client reads that stream, from the start or after the `id:` it last saw (`Last-Event-ID`). The
task keeps reading the turn when every client has gone, so the journal always ends, and
`turn_journal_seconds` after the last event Redis drops it. The key names the tenant, the
caller, the persona, the conversation and the message: only the caller who sent the message can
read its turn, on any gateway replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from edrs_core.errors import ServiceError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edrs_gateway.api.problems import ApiError, problem_body, problem_of
from edrs_gateway.api.turns import Turn, TurnEvent, user_id_of
from edrs_gateway.auth.principal import Principal

log = logging.getLogger("edrs.gateway.turns")

# How long one read waits for the next event before checking that the journal still exists; under
# the runtime's Redis socket timeout (2 s), which would otherwise end a blocked read as a failure.
_BLOCK_MILLISECONDS = 1_000
_FINAL = frozenset({"completed", "error"})


@dataclass(frozen=True)
class JournalEntry:
    id: str
    name: str
    data: dict[str, Any]


def journal_key(
    principal: Principal, persona_id: UUID, conversation_id: str, message_id: str
) -> str:
    return (
        f"gateway:turn:{principal.tenant_id}:{user_id_of(principal)}:{persona_id}:"
        f"{conversation_id}:{message_id}"
    )


class TurnJournal:
    def __init__(self, redis: Redis, keep_seconds: int) -> None:
        self.redis = redis
        self.keep_seconds = keep_seconds
        self._relays: set[asyncio.Task[None]] = set()

    async def append(self, key: str, name: str, data: dict[str, Any]) -> str:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"name": name, "data": json.dumps(data)})
            pipe.expire(key, self.keep_seconds)
            entry_id, _ = await pipe.execute()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def exists(self, key: str) -> bool:
        return bool(await self.redis.exists(key))

    def relay(self, turn: Turn, key: str, first: TurnEvent) -> None:
        """Run the rest of `turn` in the background, journalling every event; `first` (already
        read by the route, so a refusal was a plain HTTP error) is written before the rest."""
        task = asyncio.create_task(self._relay(turn, key, first), name=f"turn-relay {key}")
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _relay(self, turn: Turn, key: str, first: TurnEvent) -> None:
        try:
            await self.append(key, first.name, first.data)
            async for event in turn.events():
                if event is first:
                    continue
                await self.append(key, event.name, event.data)
        except ApiError as error:
            await self._append_error(key, problem_body(error))
        except ServiceError as error:
            await self._append_error(key, problem_body(problem_of(error)))
        except asyncio.CancelledError:
            turn.cancel()
            raise
        except Exception:  # Redis down mid-turn: the turn goes on in the persona service
            log.exception("journalling turn %s failed", key)
            turn.cancel()

    async def _append_error(self, key: str, problem: dict[str, Any]) -> None:
        try:
            await self.append(key, "error", problem)
        except Exception:
            log.exception("journalling the failure of turn %s failed", key)

    async def follow(self, key: str, after: str = "0") -> AsyncIterator[JournalEntry]:
        """The journal's entries after `after` (a stream id; "0" = from the start), waiting for
        new ones, until `completed` or `error`. A journal that disappears (expired) ends with an
        `error` entry, not silence."""
        last = after
        while True:
            try:
                reply: Any = await self.redis.xread(
                    {key: last}, count=256, block=_BLOCK_MILLISECONDS
                )
                gone = not reply and not await self.exists(key)
            except RedisError:
                log.exception("reading the journal of turn %s failed", key)
                problem = ApiError(503, "upstream_unavailable", "the turn's events are unavailable")
                yield JournalEntry(last, "error", problem_body(problem))
                return
            if not reply:
                if gone:
                    yield JournalEntry(last, "error", problem_body(_gone(key.rsplit(":", 1)[-1])))
                    return
                continue
            for raw_id, fields in reply[0][1]:
                entry = _entry(raw_id, fields)
                last = entry.id
                yield entry
                if entry.name in _FINAL:
                    return

    async def close(self) -> None:
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)


def _entry(raw_id: Any, fields: dict[Any, Any]) -> JournalEntry:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    decoded = {text(k): text(v) for k, v in fields.items()}
    return JournalEntry(text(raw_id), decoded["name"], json.loads(decoded["data"]))


def _gone(message_id: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"no streamed turn of message {message_id} to resume: it is not yours, or it ended "
        "longer ago than the gateway keeps turns (read the conversation's messages instead)",
    )


def turn_not_found(message_id: UUID) -> ApiError:
    return _gone(str(message_id))
