"""Learning gaps: every search is recorded after it answered (its query, the collections, the
best vector similarity and the best score, who asked), and `ListLearningGaps` lists, for a
collection, the questions it answered poorly, grouped by normalised query, worst first
(docs/knowledge.md, "Learning gaps")."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import InvalidArgument
from edrs_core.ids import new_id
from edrs_core.pagination import page_size

log = logging.getLogger(__name__)

ORIGINS = ("api", "turn", "research")
# Searches waiting to be written; past this, a search is not recorded (counted and logged): the
# log must never hold memory or slow searching when the database is slow.
MAX_PENDING = 1_000
# Pruning runs at most this often (seconds), after a recording.
PRUNE_EVERY = 3_600.0

_PUNCTUATION = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"[\s_]+")


def normalize_query(query: str) -> str:
    """The grouping key of a query: NFKC, case-folded, punctuation (and `_`) read as space, runs
    of white space one space, trimmed. "How do I book travel?" and "how do i  book travel" are
    one question."""
    text = unicodedata.normalize("NFKC", query).casefold()
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", text)).strip()


@dataclass(frozen=True)
class SearchRecord:
    client_id: str
    collection_ids: Sequence[UUID]
    query: str
    mode: str
    k: int
    passages: int
    best_similarity: float | None
    best_score: float | None
    origin: str
    caller: str


@dataclass(frozen=True)
class Gap:
    normalized_query: str
    query: str
    count: int
    no_passage_count: int
    first_asked: datetime
    last_asked: datetime
    best_similarity: float | None
    best_score: float | None
    origins: list[str]


def _offset_token(offset: int, key: str) -> str:
    raw = json.dumps({"o": offset, "q": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _offset_from_token(token: str, key: str) -> int:
    """The offset a page token of ours carries (0: the first page). A token carries the query
    it was issued for, so one issued for another collection, window or threshold is refused."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, issued_for = int(data["o"]), str(data["q"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page.page_token is not a token this service issued", field="page.page_token"
        ) from None
    if offset < 0 or issued_for != key:
        raise InvalidArgument(
            "page.page_token was issued for another collection, window or threshold",
            field="page.page_token",
        )
    return offset


class SearchLog:
    """Writes search records in the background (one INSERT each, after the answer went out) and
    prunes those older than `retention_days`; reads a collection's gaps."""

    def __init__(self, db: asyncpg.Pool, *, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        self._pending: set[asyncio.Task[None]] = set()
        self._last_prune = float("-inf")
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.retention_days > 0

    def record(self, record: SearchRecord) -> None:
        """Schedules the record's INSERT and returns at once; never raises."""
        if not self.enabled or not record.collection_ids:
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1_000 == 0:
                log.warning(
                    "search log: %d searches not recorded (%d writes pending)",
                    self.dropped,
                    len(self._pending),
                )
            return
        task = asyncio.get_running_loop().create_task(self._write(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Waits for the writes scheduled so far (shutdown, tests of the class itself)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _write(self, r: SearchRecord) -> None:
        try:
            await self.db.execute(
                """INSERT INTO search_log (id, client_id, collection_ids, query, normalized_query,
                       mode, k, passages, best_similarity, best_score, origin, caller)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                new_id(),
                r.client_id,
                list(r.collection_ids),
                r.query,
                normalize_query(r.query),
                r.mode,
                r.k,
                r.passages,
                r.best_similarity,
                r.best_score,
                r.origin,
                r.caller,
            )
            now = asyncio.get_running_loop().time()
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                await self.prune()
        except Exception as exc:
            log.warning("search log: a search was not recorded: %s", type(exc).__name__)

    async def prune(self) -> int:
        """Deletes the records older than the retention; returns how many."""
        status = await self.db.execute(
            "DELETE FROM search_log WHERE created_at < now() - make_interval(days => $1)",
            self.retention_days,
        )
        return int(status.split()[-1])

    async def gaps(
        self,
        client_id: str,
        collection_id: UUID,
        *,
        window_days: int,
        max_similarity: float,
        page_token: str,
        requested_size: int,
    ) -> tuple[list[Gap], str]:
        """The normalised queries of the window none of whose searches of `collection_id` was
        answered well (a passage found, and a best similarity of at least `max_similarity` or no
        vector ranking to judge by), worst first."""
        key = f"{collection_id}/{window_days}/{max_similarity!r}"
        offset = _offset_from_token(page_token, key)
        limit = page_size(requested_size)
        rows = await self.db.fetch(
            """SELECT normalized_query,
                      (array_agg(query ORDER BY created_at DESC, id DESC))[1] AS query,
                      count(*) AS count,
                      count(*) FILTER (WHERE passages = 0) AS no_passage_count,
                      min(created_at) AS first_asked,
                      max(created_at) AS last_asked,
                      max(best_similarity) AS best_similarity,
                      max(best_score) AS best_score,
                      array_agg(DISTINCT origin) AS origins
               FROM search_log
               WHERE client_id = $1 AND collection_ids @> ARRAY[$2::uuid]
                 AND created_at >= now() - make_interval(days => $3)
               GROUP BY normalized_query
               HAVING NOT bool_or(
                   passages > 0 AND (best_similarity IS NULL OR best_similarity >= $4))
               ORDER BY max(best_similarity) ASC NULLS FIRST, count(*) DESC, normalized_query
               OFFSET $5 LIMIT $6""",
            client_id,
            collection_id,
            window_days,
            max_similarity,
            offset,
            limit + 1,
        )
        token = _offset_token(offset + limit, key) if len(rows) > limit else ""
        return [_gap(r) for r in rows[:limit]], token


def _gap(row: Any) -> Gap:
    return Gap(
        normalized_query=row["normalized_query"],
        query=row["query"],
        count=row["count"],
        no_passage_count=row["no_passage_count"],
        first_asked=row["first_asked"],
        last_asked=row["last_asked"],
        best_similarity=row["best_similarity"],
        best_score=row["best_score"],
        origins=[o for o in ORIGINS if o in row["origins"]],
    )
