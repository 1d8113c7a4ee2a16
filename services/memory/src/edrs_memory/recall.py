"""Recall scoring: how well a stored episode answers a query, from its relevance, recency and importance.

    score     = 0.5 * relevance + 0.3 * recency + 0.2 * importance
    relevance = cosine similarity of the query's and the episode's embeddings, clamped to 0..1
                (0 when either has none: an empty query, an episode stored before embeddings)
    recency   = 0.5 ** (age / half_life)      (half-life 7 days by default; 1 = just now)
    importance= the episode's own 0..1 importance

Every part is 0..1, so with weights summing to 1 the score is 0..1 too. The functions here are pure:
the store supplies candidates and their similarity, the caller supplies the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from edrs_memory.store import Episode, RecallCandidate


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
    # Nearest episodes by embedding, and most recent ones, that are scored per recall.
    nearest: int = 50
    recent: int = 50


@dataclass(frozen=True, kw_only=True)
class ScoreParts:
    score: float
    relevance: float
    recency: float
    importance: float


@dataclass(frozen=True, kw_only=True)
class ScoredMemory:
    episode: Episode
    parts: ScoreParts


def relevance(similarity: float | None) -> float:
    """Relevance 0..1 from cosine similarity (-1..1): opposite or unrelated meanings count 0."""
    if similarity is None:
        return 0.0
    return min(max(similarity, 0.0), 1.0)


def recency(age: timedelta, half_life: timedelta) -> float:
    """1 for an episode stored now, halving every `half_life`: exp(-age / half_life * ln 2).

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
            episode=c.episode,
            parts=score(
                relevance=relevance(c.similarity),
                age=now - c.episode.created_at,
                importance=c.episode.importance,
                policy=policy,
            ),
        )
        for c in candidates
    ]
    scored.sort(key=lambda s: (s.parts.score, s.episode.created_at, s.episode.id), reverse=True)
    return scored[:limit]
