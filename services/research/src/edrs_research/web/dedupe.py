"""Near-duplicate pages: the same text on several URLs (mirrors, syndicated copies, a page with
another menu) counts once among a job's sources.

Two texts are near-duplicates when the Jaccard similarity of their sets of word 5-shingles
(every run of 5 consecutive words, lower-cased, punctuation dropped) is at least `threshold`
(0.8 by default). Texts shorter than 5 words are one shingle. Exact comparison of the sets, not
an estimate (MinHash): a job reads at most a few hundred pages, so comparing each new page with
those before it costs less than a millisecond each.
"""

from __future__ import annotations

import hashlib
import re

SHINGLE_WORDS = 5
DEFAULT_THRESHOLD = 0.8

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def shingles(text: str, size: int = SHINGLE_WORDS) -> frozenset[int]:
    """The hashed word `size`-shingles of `text`."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return frozenset()
    if len(words) <= size:
        runs = [" ".join(words)]
    else:
        runs = [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]
    return frozenset(
        int.from_bytes(hashlib.blake2b(run.encode(), digest_size=8).digest(), "big") for run in runs
    )


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class Deduper:
    """Remembers the pages seen so far and tells when a new one repeats one of them."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self._seen: list[tuple[str, frozenset[int]]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def similar(self, text: str) -> tuple[str, float] | None:
        """The key of the most similar page seen, and the similarity, if at least `threshold`."""
        mine = shingles(text)
        best: tuple[str, float] | None = None
        for key, theirs in self._seen:
            small, large = sorted((len(mine), len(theirs)))
            if large and small < self.threshold * large:
                continue  # Jaccard is at most small/large: it cannot reach the threshold
            score = jaccard(mine, theirs)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    def seen(self, text: str, *, key: str) -> str | None:
        """The key of the page `text` near-duplicates, or None: then `text` is remembered as
        `key` (so a later copy of it is caught)."""
        found = self.similar(text)
        if found is not None:
            return found[0]
        self._seen.append((key, shingles(text)))
        return None
