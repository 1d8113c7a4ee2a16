"""One turn at a time per conversation (docs/conversation.md, "Concurrent turns").

Across replicas a Redis lock per conversation serialises the turns; within a replica an asyncio lock
in front of it keeps them first-come, first-served (asyncio.Lock wakes its waiters in order, while
the Redis lock is taken by polling). A Redis counter of the conversation's turns, running and
waiting, tells a newcomer how many are ahead and bounds the queue."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Literal

from edrs_core import Aborted, ResourceExhausted
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

log = logging.getLogger("edrs.persona.turns")

# How often a waiting turn polls the Redis lock once it is first in line in this replica.
_LOCK_POLL_SECONDS = 0.02


def conversation_key(client_id: str, persona_id: str, user_id: str, conversation_id: str) -> str:
    """A Redis key part for one conversation; hashed, since user ids may hold any character."""
    raw = "\x00".join((client_id, persona_id, user_id, conversation_id)).encode()
    return hashlib.sha256(raw).hexdigest()


class _LocalLine:
    """The asyncio lock of one conversation in this replica, dropped when nobody uses it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Turn:
    """A reserved place in a conversation's line: `ahead` turns run or wait before it."""

    def __init__(self, gate: TurnGate, key: str, ahead: int, lock: Lock, holding: bool) -> None:
        self.gate = gate
        self.key = key
        self.ahead = ahead
        self._lock = lock
        self._holding = holding
        self._local: _LocalLine | None = None
        self._local_held = False
        self._counted = gate.policy == "queue"

    async def wait(self) -> None:
        """Return once every turn ahead has finished; this turn then runs."""
        if self._holding:
            return
        line = self.gate._lines.setdefault(self.key, _LocalLine())
        line.users += 1
        self._local = line
        await line.lock.acquire()
        self._local_held = True
        await self._lock.acquire()
        self._holding = True

    async def finish(self) -> None:
        """Let the next turn run; safe to call whether or not the turn ever started."""
        try:
            if self._holding:
                self._holding = False
                try:
                    await self._lock.release()
                except LockError:
                    # The lock outlived turn_lock_seconds and expired; nothing left to release.
                    log.warning("turn lock of conversation %s had expired", self.key)
            if self._counted:
                self._counted = False
                await self.gate.redis.decr(self.gate._waiting_key(self.key))
        finally:
            line = self._local
            if line is not None:
                self._local = None
                if self._local_held:
                    self._local_held = False
                    line.lock.release()
                line.users -= 1
                if line.users == 0:
                    self.gate._lines.pop(self.key, None)


class TurnGate:
    def __init__(
        self,
        redis: Redis,
        *,
        policy: Literal["queue", "reject"],
        max_queued: int,
        lock_seconds: float,
    ) -> None:
        self.redis = redis
        self.policy = policy
        self.max_queued = max_queued
        self.lock_seconds = lock_seconds
        self._lines: dict[str, _LocalLine] = {}

    @staticmethod
    def _waiting_key(key: str) -> str:
        return f"persona:turns:{key}"

    def _lock(self, key: str) -> Lock:
        return self.redis.lock(
            f"persona:turn-lock:{key}",
            timeout=self.lock_seconds,
            sleep=_LOCK_POLL_SECONDS,
            thread_local=False,
        )

    async def reserve(self, key: str, conversation_id: str) -> Turn:
        """A place in the conversation's line, or ABORTED (reject policy) / RESOURCE_EXHAUSTED."""
        lock = self._lock(key)
        if self.policy == "reject":
            if not await lock.acquire(blocking=False):
                raise Aborted(f"conversation {conversation_id} has a turn in progress")
            return Turn(self, key, 0, lock, holding=True)
        waiting = self._waiting_key(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            # The counter expires with the lock, so a crashed replica's count does not stick.
            pipe.incr(waiting)
            pipe.expire(waiting, int(self.lock_seconds))
            count, _ = await pipe.execute()
        ahead = int(count) - 1
        if ahead > self.max_queued:
            await self.redis.decr(waiting)
            raise ResourceExhausted(
                f"conversation {conversation_id} already has {ahead} turns waiting or running; "
                f"the limit is {self.max_queued}"
            )
        return Turn(self, key, ahead, lock, holding=False)
