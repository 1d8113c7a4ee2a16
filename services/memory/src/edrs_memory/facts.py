"""Facts about a user: read from what they say by rules, and how a new fact meets the current ones.

Rules, not the model: the 135M chat model is unreliable at extraction, and rules are predictable,
fast and testable. Both functions here are pure; the store applies their decisions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

# One current value each: a different value supersedes the current fact.
SINGLE_VALUED = frozenset({"manager", "name", "employer", "job_title", "location", "timezone"})
# Stating one of these about a value retires the other about the same value.
OPPOSITES = {"like": "dislike", "dislike": "like"}

MAX_VALUE_LENGTH = 200

# Words that make "I'm a(n) X" a job title rather than "I'm a big fan of tea".
JOB_WORDS = frozenset(
    [
        "accountant",
        "administrator",
        "analyst",
        "architect",
        "artist",
        "assistant",
        "attorney",
        "baker",
        "biologist",
        "carpenter",
        "ceo",
        "cfo",
        "chef",
        "chemist",
        "cio",
        "consultant",
        "coordinator",
        "cto",
        "dentist",
        "designer",
        "developer",
        "director",
        "doctor",
        "economist",
        "editor",
        "electrician",
        "engineer",
        "executive",
        "founder",
        "journalist",
        "lawyer",
        "lead",
        "lecturer",
        "librarian",
        "manager",
        "marketer",
        "mathematician",
        "mechanic",
        "musician",
        "nurse",
        "officer",
        "owner",
        "pharmacist",
        "photographer",
        "physician",
        "physicist",
        "pilot",
        "plumber",
        "principal",
        "producer",
        "professor",
        "programmer",
        "recruiter",
        "representative",
        "researcher",
        "salesperson",
        "scientist",
        "specialist",
        "statistician",
        "student",
        "supervisor",
        "surgeon",
        "teacher",
        "technician",
        "therapist",
        "translator",
        "tutor",
        "writer",
    ]
)

# Fillers that may open or close a clause: "actually, my manager is now Omar".
_FILLERS = "actually|also|now|currently|btw|by the way|these days|anyway|anymore|any more|again|please|thanks|thank you"
_TRAILING_FILLERS = re.compile(rf"(?:[\s,]+(?:{_FILLERS}))+$", re.IGNORECASE)
_NOW = r"(?:(?:now|currently|actually)\s+)?"
_I_AM = r"(?:i'm|i\u2019m|im|i am)"

# (attribute, pattern); each pattern captures the value in group "v" up to the clause's end.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    (attr, re.compile(pattern, re.IGNORECASE))
    for attr, pattern in [
        ("manager", rf"\bmy (?:manager|boss|line manager) is {_NOW}(?P<v>.+)"),
        ("manager", rf"\bi {_NOW}report (?:directly )?to (?P<v>.+)"),
        ("name", rf"\bmy name is {_NOW}(?P<v>.+)"),
        ("name", r"\bcall me (?P<v>.+)"),
        ("employer", rf"\bi {_NOW}work (?:at|for) (?P<v>.+)"),
        ("job_title", rf"\bi {_NOW}work as (?:an? )?(?P<v>.+)"),
        ("job_title", rf"\b{_I_AM} {_NOW}(?:an? )(?P<v>.+)"),
        ("location", rf"\bi {_NOW}live in (?P<v>.+)"),
        ("location", rf"\b{_I_AM} {_NOW}based in (?P<v>.+)"),
        ("timezone", rf"\bmy time ?zone is {_NOW}(?P<v>.+)"),
        ("preference", rf"\bi {_NOW}(?:would |much |really )?prefer (?P<v>.+)"),
        ("dislike", r"\bi (?:really )?(?:dislike|hate|detest|can't stand) (?P<v>.+)"),
        ("dislike", r"\bi (?:really )?(?:don't|don\u2019t|do not) (?:really )?like (?P<v>.+)"),
        ("like", r"\bi (?:really |also )?(?:like|love|enjoy) (?P<v>.+)"),
    ]
]

# Clauses end at sentence punctuation, and at "and"/"but" that start a new statement about
# the user ("my manager is Priya and I live in Lisbon"); "I like tea and cake" stays whole.
_CLAUSE_END = re.compile(
    r"(?<=[.!?;\n])|\s*,?\s+(?:and|but)\s+(?=(?:i|my|i'm|i\u2019m|call)\b)"
    r"|\s*,\s+(?=(?:i|my|i'm|i\u2019m|call)\b)",
    re.I,
)
# Single values end at a comma or a relative clause: "Priya, who joined in May" -> "Priya".
_SINGLE_VALUE_END = re.compile(r",|\s+(?:who|which|since|because|from)\s+", re.IGNORECASE)
_JOB_VALUE_END = re.compile(r",|\s+(?:at|for|in|with|and|who|since)\s+", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class StatedFact:
    attribute: str
    value: str
    # The clause the fact was read from.
    statement: str


def _clauses(text: str) -> Iterable[str]:
    for part in _CLAUSE_END.split(text):
        part = (part or "").strip()
        # A question states nothing: "is my manager still Priya?".
        if part and not part.endswith("?"):
            yield part


def _clean(value: str) -> str:
    value = value.strip().strip("\"'\u201c\u201d\u2018\u2019").strip()
    value = value.rstrip(".!;:,").strip()
    value = _TRAILING_FILLERS.sub("", value).strip().rstrip(".!;:,").strip()
    return value.strip("\"'\u201c\u201d\u2018\u2019").strip()


def _value(attribute: str, raw: str) -> str | None:
    if attribute == "job_title":
        raw = _JOB_VALUE_END.split(raw, maxsplit=1)[0]
    elif attribute in SINGLE_VALUED:
        raw = _SINGLE_VALUE_END.split(raw, maxsplit=1)[0]
    value = _clean(raw)
    if not value or len(value) > MAX_VALUE_LENGTH:
        return None
    # "my name is not Bob" states nothing we can keep.
    if re.match(r"(?:not|no longer|never)\b", value, re.IGNORECASE):
        return None
    if attribute == "job_title" and not set(re.findall(r"[a-z]+", value.lower())) & JOB_WORDS:
        return None
    return value


def extract(text: str) -> list[StatedFact]:
    """The facts `text` states about its speaker, in the order stated, without repeats."""
    found: list[StatedFact] = []
    seen: set[tuple[str, str]] = set()
    for clause in _clauses(text):
        for attribute, pattern in _RULES:
            match = pattern.search(clause)
            if match is None:
                continue
            value = _value(attribute, match["v"])
            if value is None:
                continue
            key = (attribute, normalise(value))
            if key not in seen:
                seen.add(key)
                found.append(StatedFact(attribute=attribute, value=value, statement=clause))
            # One fact per clause: "I don't like X" must not also count as "I like X".
            break
    return found


def normalise(value: str) -> str:
    """The form two values are compared in: case and spacing do not make a new fact."""
    return " ".join(value.casefold().split())


@dataclass(frozen=True, kw_only=True)
class CurrentFact:
    id: UUID
    attribute: str
    value: str


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """What stating `attribute = value` does: add a fact (or not), and retire these ones."""

    add: bool
    supersede: tuple[UUID, ...] = ()


def resolve(current: Sequence[CurrentFact], attribute: str, value: str) -> Resolution:
    """How a newly stated fact meets the user's current facts.

    Single-valued: the same value is a no-op, a different one supersedes the current fact.
    Multi-valued: added unless already current; "like X" supersedes a current "dislike X" and
    vice versa.
    """
    same_attribute = [f for f in current if f.attribute == attribute]
    if any(normalise(f.value) == normalise(value) for f in same_attribute):
        return Resolution(add=False)
    if attribute in SINGLE_VALUED:
        return Resolution(add=True, supersede=tuple(f.id for f in same_attribute))
    opposite = OPPOSITES.get(attribute)
    retired = tuple(
        f.id
        for f in current
        if opposite is not None
        and f.attribute == opposite
        and normalise(f.value) == normalise(value)
    )
    return Resolution(add=True, supersede=retired)
