"""Text cut into sentences, whole or as it streams in: speech is synthesised a sentence at a time
(the reasoning service's Synthesize, the gateway's voice turns)."""

from __future__ import annotations

import re

# A sentence ends at ., !, ? or … (with closing quotes or brackets) followed by white space, or at
# a line break. "e.g. this" and "Dr. Smith" split early; that only shortens a piece, it loses
# nothing.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'\u201d\u2019)\]])\s+|\n+")


def sentences(text: str) -> list[str]:
    """`text` cut into sentences, white space trimmed, empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class SentenceBuffer:
    """Text arriving in pieces (a model's deltas) out as whole sentences: `push` returns the
    sentences the new text completed; `flush` returns what is left at the end."""

    def __init__(self) -> None:
        self._text = ""

    def push(self, piece: str) -> list[str]:
        self._text += piece
        ends = list(_SENTENCE_END.finditer(self._text))
        if not ends:
            return []
        cut = ends[-1].end()
        done, self._text = self._text[:cut], self._text[cut:]
        return sentences(done)

    def flush(self) -> list[str]:
        rest, self._text = self._text, ""
        return sentences(rest)
