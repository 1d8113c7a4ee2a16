"""The pure parts of the reasoning strategies: prompts, answer extraction, voting and claim checks."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from edrs_reasoning.backends.base import Message

DIRECT = "direct"
CHAIN_OF_THOUGHT = "chain_of_thought"
SELF_CONSISTENCY = "self_consistency"
VERIFY = "verify"

# Sampling has to vary for self-consistency to mean anything: each sample runs at least this hot.
SELF_CONSISTENCY_MIN_TEMPERATURE = 0.7

COT_INSTRUCTION = (
    'Think step by step. Then write the final answer on its own last line, starting with "Answer:".'
)


def with_chain_of_thought(messages: Sequence[Message]) -> list[Message]:
    """The conversation with the step-by-step instruction added to its last (user) message: small
    models follow an instruction next to the question more reliably than a system message."""
    *head, last = messages
    return [*head, Message(last.role, f"{last.content}\n\n{COT_INSTRUCTION}")]


def render_prompt(messages: Sequence[Message]) -> str:
    """The trace's `prompt`: one message per line, "role: content"."""
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


# "Answer: x", "Final answer - x", "**Answer:** x": the last such line wins.
_ANSWER_LINE = re.compile(
    r"^[\s*#>_-]*(?:final\s+)?answer[\s*_]*[:\-\u2013\u2014][\s*_]*(?P<answer>.+?)[\s*_]*$",
    re.IGNORECASE | re.MULTILINE,
)


def extract_answer(text: str) -> str:
    """The final answer of a step-by-step generation; the whole text when it has no answer line."""
    matches = [m.group("answer").strip() for m in _ANSWER_LINE.finditer(text)]
    matches = [m for m in matches if m]
    return matches[-1] if matches else text.strip()


_PUNCTUATION = str.maketrans("", "", string.punctuation + "\u201c\u201d\u2018\u2019\u2026")


def normalise_answer(answer: str) -> str:
    """Case, punctuation and white space do not make two answers different."""
    return " ".join(answer.lower().translate(_PUNCTUATION).split())


@dataclass(frozen=True)
class Vote:
    winner: int
    """Index of the first sample giving the majority answer."""
    confidence: float
    """Share of the samples giving it."""


def majority_vote(answers: Sequence[str]) -> Vote:
    """The most frequent normalised answer; a tie goes to the answer given first."""
    if not answers:
        raise ValueError("no answers to vote on")
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        key = normalise_answer(answer)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return Vote(winner=first[best], confidence=counts[best] / len(answers))


# --- verify -------------------------------------------------------------------------------------

# A claim is supported by a fact when both hold:
#   1. the embedding cosine similarity of claim and fact is at least SUPPORT_SIMILARITY, and
#   2. the fact covers at least SUPPORT_OVERLAP of the claim's content words (stop words dropped,
#      a plural/verb "s" folded), including every number and every name (a capitalised word that
#      does not start the sentence).
# Similarity alone calls "my manager is Omar" supported by "my manager is Priya" (MiniLM puts them
# close); word overlap alone misses paraphrase. Both together stay deterministic and explainable:
# the trace shows which claims failed. A 135M chat model cannot judge entailment reliably, so the
# model is not asked.
SUPPORT_SIMILARITY = 0.55
SUPPORT_OVERLAP = 0.5

_STOP_WORD_TEXT = """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yourself yourselves user users
"""
_STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
_WORD = re.compile("[A-Za-z0-9][A-Za-z0-9'\u2019-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def split_claims(draft: str) -> list[str]:
    """The draft's sentences and bullet lines, each one claim."""
    claims = []
    for part in _SENTENCE_END.split(draft):
        claim = _BULLET.sub("", part).strip()
        if _WORD.search(claim):
            claims.append(claim)
    return claims


def _fold(word: str) -> str:
    word = word.lower().replace("\u2019", "'").removesuffix("'s")
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    return {_fold(w) for w in _WORD.findall(text) if w.lower() not in _STOP_WORDS}


def key_words(text: str) -> set[str]:
    """Numbers and names: words a supporting fact must contain verbatim."""
    words = _WORD.findall(text)
    keys = {_fold(w) for w in words if any(c.isdigit() for c in w)}
    keys |= {_fold(w) for w in words[1:] if w[0].isupper() and w.lower() not in _STOP_WORDS}
    return keys


def word_overlap(claim: str, fact: str) -> float:
    """Share of the claim's content words the fact contains (1.0 for a claim with none)."""
    words = content_words(claim)
    if not words:
        return 1.0
    return len(words & content_words(fact)) / len(words)


def supports(claim: str, fact: str, similarity: float) -> bool:
    return (
        similarity >= SUPPORT_SIMILARITY
        and word_overlap(claim, fact) >= SUPPORT_OVERLAP
        and key_words(claim) <= content_words(fact)
    )


@dataclass(frozen=True)
class Verification:
    claims: list[str]
    unsupported: list[str]
    confidence: float
    verdict: str


def verify_claims(
    claims: Sequence[str], facts: Sequence[str], similarities: Sequence[Sequence[float]]
) -> Verification:
    """`similarities[i][j]` is the cosine similarity of claim i and fact j."""
    unsupported = [
        claim
        for i, claim in enumerate(claims)
        if not any(supports(claim, fact, similarities[i][j]) for j, fact in enumerate(facts))
    ]
    total = len(claims)
    held = total - len(unsupported)
    confidence = held / total if total else 0.0
    if not total:
        verdict = "nothing to check: the draft makes no claim"
    elif not unsupported:
        verdict = f"supported: the facts support all {total} claims of the draft"
    elif held == 0:
        verdict = f"unsupported: the facts support none of the {total} claims of the draft"
    else:
        verdict = f"partly supported: the facts support {held} of the {total} claims of the draft"
    return Verification(list(claims), unsupported, confidence, verdict)
