"""nDCG@k and recall@k over a ranking of passages judged by the documents (sections) they are in.

Relevance is binary: a passage's document is relevant to the query or not. A ranking is the list
of the returned passages' document keys, best first; several passages of one document may be in
it. A relevant document gains once, at its first passage: later passages of it gain nothing (a
reader learns nothing new from them), so ten passages of one relevant section do not make a
perfect top ten when two sections are relevant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set


def ndcg_at(ranking: Sequence[str], relevant: Set[str], k: int = 10) -> float:
    """Binary-gain nDCG of the first `k` passages: Σ gain_i / log2(i + 1) over ranks i from 1,
    divided by the same sum for the ideal ranking (min(k, |relevant|) relevant documents first)."""
    if not relevant:
        raise ValueError("a query needs at least one relevant document")
    seen: set[str] = set()
    dcg = 0.0
    for i, key in enumerate(ranking[:k], start=1):
        if key in relevant and key not in seen:
            dcg += 1 / math.log2(i + 1)
        seen.add(key)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def recall_at(ranking: Sequence[str], relevant: Set[str], k: int = 100) -> float:
    """The share of the relevant documents that have a passage among the first `k`."""
    if not relevant:
        raise ValueError("a query needs at least one relevant document")
    return len(set(ranking[:k]) & relevant) / len(relevant)
