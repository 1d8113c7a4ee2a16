"""Extractive synthesis: the report's claims are sentences of the passages found, never free
text, so each claim is in the passage it cites by construction (docs/research.md, "Synthesis").

For each sub-question of the plan, the sentences of the passages its queries found are ranked by
relevance (share of the sub-question's and question's content words they hold) x the passage's
retrieval rank x its source's credibility; the best few become the section's claims. Then:
  * two claims about the same thing (most content words shared) that differ in a number or a
    name contradict each other: the one from the less credible source (credibility x agreement)
    is flagged "contradicted by a more credible source [n]", never stated as fact;
  * a claim whose source scores below the minimum credibility is flagged too.
Verification (reasoning's verify strategy) then checks every remaining claim against its cited
passage (jobs/activities.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edrs_research.jobs.planning import content_words

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_NUMBER = re.compile(r"\d[\d,.]*")
_NAME = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+")
MIN_SENTENCE, MAX_SENTENCE = 15, 400
CONTRADICTION_OVERLAP = 0.5


@dataclass
class Passage:
    key: str  # the chunk id
    document_id: str
    version: int
    start: int
    end: int
    text: str
    content_hash: str
    title: str
    url: str
    score: float
    source_id: str = ""
    credibility: float = 1.0
    fetch_time: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Passage:
        return cls(**d)


@dataclass
class Claim:
    text: str
    passage: str  # key of the cited passage
    rank: float
    supported: bool = True
    support: float = 0.0
    note: str = ""


@dataclass
class Section:
    heading: str
    claims: list[Claim] = field(default_factory=list)


def sentences(text: str) -> list[str]:
    """The passage's sentences, each an exact substring of it (stripped)."""
    out = []
    for match in _SENTENCE.finditer(text):
        s = match.group(0).strip()
        if MIN_SENTENCE <= len(s) <= MAX_SENTENCE:
            out.append(s)
    return out


def _facts(text: str) -> set[str]:
    """Numbers and (mid-sentence) names: what two statements about one thing may disagree on."""
    return {n.rstrip(".,") for n in _NUMBER.findall(text)} | set(_NAME.findall(text))


def draft(
    question: str,
    plan: list[dict[str, Any]],
    found: dict[str, list[Passage]],
    *,
    claims_per_section: int,
) -> list[Section]:
    """`found` maps each query to the passages it found, best first."""
    topic = set(content_words(question))
    used: set[str] = set()
    sections: list[Section] = []
    for step in plan:
        wanted = topic | set(content_words(step["sub_question"]))
        candidates: dict[tuple[str, str], Claim] = {}
        for query in step["queries"]:
            passages = found.get(query, [])
            for rank, p in enumerate(passages):
                retrieval = 1.0 / (1 + rank)
                for s in sentences(p.text):
                    words = set(content_words(s))
                    hits = len(words & wanted)
                    if not hits:
                        continue
                    relevance = hits / max(1, len(wanted))
                    score = relevance * (0.5 + 0.5 * retrieval) * p.credibility
                    key = (s.lower(), p.key)
                    if key not in candidates or candidates[key].rank < score:
                        candidates[key] = Claim(s, p.key, score)
        section = Section(step["sub_question"])
        for claim in sorted(candidates.values(), key=lambda c: -c.rank):
            norm = claim.text.lower()
            if norm in used:
                continue
            used.add(norm)
            section.claims.append(claim)
            if len(section.claims) >= claims_per_section:
                break
        sections.append(section)
    return sections


def weigh(sections: list[Section], passages: dict[str, Passage], min_credibility: float) -> None:
    """Flag the claims of low-credibility sources and the losing side of contradictions; the
    numbers in notes are filled in later (citation numbers), so notes name passage keys as
    `{key}` placeholders."""
    claims = [c for s in sections for c in s.claims]
    for c in claims:
        if passages[c.passage].credibility < min_credibility:
            c.supported = False
            c.note = (
                f"its source's credibility {passages[c.passage].credibility:.2f} is below "
                f"{min_credibility:.2f}"
            )
    for i, a in enumerate(claims):
        for b in claims[i + 1 :]:
            pa, pb = passages[a.passage], passages[b.passage]
            if pa.document_id == pb.document_id:
                continue
            wa, wb = _plain_words(a.text), _plain_words(b.text)
            if not wa or not wb:
                continue
            overlap = len(wa & wb) / min(len(wa), len(wb))
            if overlap < CONTRADICTION_OVERLAP:
                continue
            if not contradict(a.text, b.text):
                continue
            loser, winner = (b, a) if _weight(pa, a, claims) >= _weight(pb, b, claims) else (a, b)
            loser.supported = False
            loser.note = f"contradicted by a more credible source {{{winner.passage}}}"


def contradict(a: str, b: str) -> bool:
    """Two statements about one thing disagree when each states a number and they share none,
    or each names something the other does not (launched "from Kourou" / "from Baikonur"). One
    that only says less ("launched in 2031" / "launched in 2031 from Kourou") agrees."""
    na = {n.rstrip(".,") for n in _NUMBER.findall(a)}
    nb = {n.rstrip(".,") for n in _NUMBER.findall(b)}
    if na and nb and na.isdisjoint(nb):
        return True
    ma, mb = set(_NAME.findall(a)), set(_NAME.findall(b))
    return bool(ma - mb) and bool(mb - ma)


def _plain_words(text: str) -> set[str]:
    return {w for w in content_words(text) if not any(ch.isdigit() for ch in w)}


def _weight(p: Passage, claim: Claim, claims: list[Claim]) -> float:
    """Credibility x (1 + the other documents' claims that agree with this one's facts)."""
    facts = _facts(claim.text)
    agreeing = {
        c.passage
        for c in claims
        if c is not claim and facts and facts <= _facts(c.text) and c.passage != claim.passage
    }
    return p.credibility * (1 + len(agreeing))


def agreement(
    sections: list[Section], passages: dict[str, Passage], domains: dict[str, str]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per source id: the other domains whose claims agree with one of its claims (the same
    thing, no contradicting fact, all its facts stated), and those that contradict one."""
    claims = [c for s in sections for c in s.claims]
    agree: dict[str, set[str]] = {}
    disagree: dict[str, set[str]] = {}
    for a in claims:
        sa = passages[a.passage].source_id
        if not sa:
            continue
        for b in claims:
            sb = passages[b.passage].source_id
            other = domains.get(sb, passages[b.passage].document_id)
            if a is b or other == domains.get(sa):
                continue
            wa, wb = _plain_words(a.text), _plain_words(b.text)
            if not wa or not wb or len(wa & wb) / min(len(wa), len(wb)) < CONTRADICTION_OVERLAP:
                continue
            if contradict(a.text, b.text):
                disagree.setdefault(sa, set()).add(other)
            elif _facts(a.text) and _facts(a.text) <= _facts(b.text):
                agree.setdefault(sa, set()).add(other)
    return agree, disagree
