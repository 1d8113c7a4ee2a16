"""The retrieval benchmark's metrics on cases worked out by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from retrieval_metrics import ndcg_at, recall_at


def test_ndcg_of_a_perfect_ranking_is_one() -> None:
    assert ndcg_at(["a", "b", "x"], {"a", "b"}) == pytest.approx(1.0)


def test_ndcg_discounts_by_rank() -> None:
    # One relevant document, at rank 3: 1/log2(4) = 0.5 against an ideal of 1/log2(2) = 1.
    assert ndcg_at(["x", "y", "a"], {"a"}) == pytest.approx(0.5)
    # Two relevant, at ranks 2 and 4: (0.6309 + 0.4307) / (1 + 0.6309).
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at(["x", "a", "y", "b"], {"a", "b"}) == pytest.approx(expected)
    assert expected == pytest.approx(0.6509, abs=1e-4)


def test_ndcg_counts_a_document_once_and_only_within_k() -> None:
    # "a" twice: the second passage of it gains nothing, so this is 1 / (1 + 1/log2(3)).
    assert ndcg_at(["a", "a", "x"], {"a", "b"}) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # The relevant document at rank 3 is outside k = 2.
    assert ndcg_at(["x", "y", "a"], {"a"}, k=2) == 0.0
    # The ideal ranking holds at most k relevant documents: three relevant, k = 2, both found.
    assert ndcg_at(["a", "b"], {"a", "b", "c"}, k=2) == pytest.approx(1.0)


def test_recall_is_the_share_of_relevant_documents_found() -> None:
    assert recall_at(["a", "x", "a", "y"], {"a", "b"}) == pytest.approx(0.5)
    assert recall_at(["x", "b", "a"], {"a", "b"}, k=2) == pytest.approx(0.5)
    assert recall_at([], {"a"}) == 0.0


def test_a_query_without_relevant_documents_is_refused() -> None:
    with pytest.raises(ValueError, match="relevant"):
        ndcg_at(["a"], set())
    with pytest.raises(ValueError, match="relevant"):
        recall_at(["a"], set())
