"""Planning: a question becomes sub-questions, each with search queries.

The model writes the plan as JSON constrained by PLAN_SCHEMA; `validate_plan` keeps it only when
every sub-question and query is well formed and on topic (shares a content word with the
question), within the job's bounds. Otherwise the deterministic planner's plan is used: the
question itself, with its keywords as a second query, and (depth 2+) one sub-question per part
of a question that lists several things ("A, B and C"). The question itself is always the first
query of the first sub-question, whichever planner ran: the job never searches less than it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_QUERY_LENGTH = 300
QUERIES_PER_STEP = 3

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\u2019-]*")
_STOP = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "tell",
        "know",
        "find",
        "give",
        "list",
        "explain",
        "describe",
    ]
)

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": 6,
            "items": {
                "type": "object",
                "properties": {
                    "sub_question": {"type": "string", "maxLength": 300},
                    "queries": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": QUERIES_PER_STEP,
                        "items": {"type": "string", "maxLength": 120},
                    },
                },
                "required": ["sub_question", "queries"],
            },
        }
    },
    "required": ["steps"],
}

PLAN_PROMPT = (
    "Split the research question into at most {n} short sub-questions and, for each, one to "
    "three search queries of a few keywords. Answer with JSON only.\n\nQuestion: {question}"
)


@dataclass(frozen=True)
class Step:
    sub_question: str
    queries: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"sub_question": self.sub_question, "queries": list(self.queries)}


def content_words(text: str) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(text):
        w = word.lower()
        if w not in _STOP and w not in seen:
            seen.append(w)
    return seen


def max_steps(depth: int) -> int:
    """Sub-questions a plan may hold: two per round of depth."""
    return 2 * max(1, depth)


def fallback_plan(question: str, depth: int) -> list[Step]:
    question = question.strip()
    words = content_words(question)
    first_queries = [question[:MAX_QUERY_LENGTH]]
    keywords = " ".join(words[:8])
    if keywords and keywords.lower() != question.lower():
        first_queries.append(keywords)
    steps = [Step(question[:MAX_QUERY_LENGTH], tuple(first_queries))]
    if depth >= 2:
        # "When did X launch, where does it go and what drives it?" -> one step per part.
        parts = [p.strip(" ?.") for p in re.split(r",|;|\band\b", question) if p.strip(" ?.")]
        if len(parts) > 1:
            subject = " ".join(words[:2])
            for part in parts[: max_steps(depth) - 1]:
                part_words = content_words(part)
                if not part_words:
                    continue
                query = " ".join(dict.fromkeys([*subject.split(), *part_words]))
                steps.append(Step(part[:MAX_QUERY_LENGTH], (query[:MAX_QUERY_LENGTH],)))
    return steps


class PlanRejected(ValueError):
    """The model's plan is not usable; the message says why (kept on the job's updates)."""


def validate_plan(raw: str, question: str, depth: int) -> list[Step]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PlanRejected(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise PlanRejected("no steps list")
    topic = set(content_words(question))
    steps: list[Step] = []
    for i, item in enumerate(data["steps"][: max_steps(depth)]):
        if not isinstance(item, dict):
            raise PlanRejected(f"step {i} is not an object")
        sub = item.get("sub_question")
        queries = item.get("queries")
        if not isinstance(sub, str) or not 3 <= len(sub.strip()) <= MAX_QUERY_LENGTH:
            raise PlanRejected(f"step {i}: sub_question must be 3..{MAX_QUERY_LENGTH} characters")
        if not isinstance(queries, list) or not queries:
            raise PlanRejected(f"step {i}: no queries")
        kept: list[str] = []
        for query in queries[:QUERIES_PER_STEP]:
            if not isinstance(query, str) or not query.strip():
                raise PlanRejected(f"step {i}: an empty query")
            if not topic & set(content_words(query)):
                raise PlanRejected(f"step {i}: query {query[:60]!r} is off the question's topic")
            kept.append(query.strip()[:MAX_QUERY_LENGTH])
        steps.append(Step(sub.strip(), tuple(dict.fromkeys(kept))))
    if not steps:
        raise PlanRejected("no steps")
    return anchored(steps, question)


def anchored(steps: list[Step], question: str) -> list[Step]:
    """The plan with the question itself as the first query of its first step."""
    first = steps[0]
    q = question.strip()[:MAX_QUERY_LENGTH]
    if q in first.queries:
        return steps
    return [Step(first.sub_question, (q, *first.queries)), *steps[1:]]


def all_queries(steps: list[dict[str, Any]]) -> list[str]:
    """Each query of a plan once, in order."""
    return list(dict.fromkeys(q for s in steps for q in s["queries"]))
