"""Recall scoring: how well a stored memory answers a query, from its relevance, recency and importance.

    score = w_rel * relevance + w_rec * recency + w_imp * importance    (weights 0.5 / 0.3 / 0.2)

Every part is 0..1, so with weights summing to 1 the score is 0..1 too. The functions here are pure:
the store supplies candidates and their full-text rank, the caller supplies the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from edrs_memory.store import Memory, RecallCandidate


@dataclass(frozen=True, kw_only=True)
class RecallWeights:
    relevance: float = 0.5
    recency: float = 0.3
    importance: float = 0.2


@dataclass(frozen=True, kw_only=True)
class RecallPolicy:
    """How recall ranks: the weights, how fast memories fade, how many candidates it scores."""

    weights: RecallWeights = RecallWeights()
    half_life: timedelta = timedelta(days=7)
    candidates: int = 500


@dataclass(frozen=True, kw_only=True)
class ScoreParts:
    score: float
    relevance: float
    recency: float
    importance: float


@dataclass(frozen=True, kw_only=True)
class ScoredMemory:
    memory: Memory
    parts: ScoreParts


def text_relevance(text_rank: float) -> float:
    """Relevance 0..1 from a full-text rank (PostgreSQL ts_rank_cd, 0..unbounded): rank/(rank+1).

    The one place relevance is defined, so embedding similarity can replace it later.
    """
    if text_rank <= 0:
        return 0.0
    return text_rank / (text_rank + 1.0)


def recency(age: timedelta, half_life: timedelta) -> float:
    """1 for a memory stored now, halving every `half_life`: exp(-age / half_life * ln 2).

    A negative age (the database clock a little ahead of ours) counts as now.
    """
    seconds = max(age.total_seconds(), 0.0)
    return math.exp(-seconds / half_life.total_seconds() * math.log(2))


def score(
    *, relevance: float, age: timedelta, importance: float, policy: RecallPolicy
) -> ScoreParts:
    """The weighted score of one memory, with every part that went into it."""
    rec = recency(age, policy.half_life)
    w = policy.weights
    total = w.relevance * relevance + w.recency * rec + w.importance * importance
    return ScoreParts(score=total, relevance=relevance, recency=rec, importance=importance)


def rank(
    candidates: Iterable[RecallCandidate], *, now: datetime, limit: int, policy: RecallPolicy
) -> list[ScoredMemory]:
    """The `limit` best candidates, best first; ties go to the newer memory."""
    scored = [
        ScoredMemory(
            memory=c.memory,
            parts=score(
                relevance=text_relevance(c.text_rank),
                age=now - c.memory.created_at,
                importance=c.memory.importance,
                policy=policy,
            ),
        )
        for c in candidates
    ]
    scored.sort(key=lambda s: (s.parts.score, s.memory.created_at, s.memory.id), reverse=True)
    return scored[:limit]
