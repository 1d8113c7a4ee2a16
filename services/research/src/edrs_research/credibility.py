"""A source's credibility: a score 0..1 from documented signals, with the reasons that make it up.

    tiers = DomainTiers.load(settings.domain_tiers_file)          # built-in defaults + the file
    s = score(Signals(domain="en.wikipedia.org", https=True, author="", published=None,
                      now=now, tier=tiers.tier_of("en.wikipedia.org")))
    s.value, [(r.signal, r.weight, r.detail) for r in s.reasons]

The score starts at BASE (0.5), adds each signal's weight, and is clamped to 0..1:

    signal       weight                                             when
    domain_tier  the tier's weight (defaults below)                 the domain is in a tier
    https        +0.05 / -0.10                                      served over https / http
    author       +0.05 / -0.05                                      an author is named / none
    date         +0.05 / -0.05 / -0.10                              dated / undated / dated in
                                                                    the future
    agreement    +0.05 per independent source agreeing, up to +0.15;
                 -0.05 per independent source contradicting, down to -0.15
    cited_by     +0.03 per other source linking to it, up to +0.09
    pinned       +0.25, and the score is at least 0.75              the tenant trusts it
    blocked      the score is 0                                     the tenant blocked it, or
                                                                    its domain is in the
                                                                    "blocked" tier

A signal not yet known (a page not fetched: no author or date read) counts as absent. Agreement
and cited_by are computed by research jobs across a job's sources (0 outside a job).

Domain tiers (`DomainTiers`): built-in defaults (DEFAULT_TIERS), merged with an operator's file
(`EDRS_RESEARCH_DOMAIN_TIERS_FILE`, YAML or JSON) that maps tier names to a weight and domains:

    reference: {weight: 0.2, domains: [wikipedia.org, britannica.com]}
    blocked:   {domains: [content-farm.example, "*.spam.example"]}

A tier in the file replaces the default tier of the same name (give `domains: []` to empty one);
other default tiers stay. A bare domain matches itself and its subdomains; `*.suffix` matches
the suffix's subdomains only. The most specific match (most labels) wins; on a tie, "blocked"
wins, then a bare domain over a wildcard. The tier named "blocked" has no weight: its domains
score 0 and are never fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BASE = 0.5
HTTPS = 0.05
HTTP = -0.10
AUTHOR = 0.05
NO_AUTHOR = -0.05
DATED = 0.05
UNDATED = -0.05
FUTURE_DATE = -0.10
AGREEMENT_EACH = 0.05
AGREEMENT_CAP = 0.15
CITED_BY_EACH = 0.03
CITED_BY_CAP = 0.09
PINNED = 0.25
PINNED_FLOOR = 0.75

BLOCKED_TIER = "blocked"
MAX_TIER_WEIGHT = 0.5

DEFAULT_TIERS: dict[str, tuple[float, tuple[str, ...]]] = {
    "government": (
        0.30,
        (
            "*.gov",
            "*.mil",
            "*.gov.uk",
            "*.gouv.fr",
            "*.go.jp",
            "*.gob.mx",
            "*.govt.nz",
            "*.gov.au",
            "*.gc.ca",
            "*.bund.de",
            "europa.eu",
        ),
    ),
    "academic": (
        0.25,
        ("*.edu", "*.ac.uk", "*.edu.au", "*.ac.jp", "*.ac.nz", "*.int", "arxiv.org"),
    ),
    "reference": (
        0.20,
        ("wikipedia.org", "britannica.com", "nature.com", "science.org", "ncbi.nlm.nih.gov"),
    ),
    "news": (
        0.10,
        (
            "reuters.com",
            "apnews.com",
            "bbc.co.uk",
            "bbc.com",
            "nytimes.com",
            "theguardian.com",
            "ft.com",
            "economist.com",
            "npr.org",
        ),
    ),
    "organisation": (0.05, ("*.org",)),
    "user_generated": (
        -0.10,
        (
            "medium.com",
            "blogspot.com",
            "wordpress.com",
            "substack.com",
            "quora.com",
            "reddit.com",
            "tumblr.com",
        ),
    ),
    BLOCKED_TIER: (0.0, ()),
}


class TiersError(ValueError):
    """The domain tiers file is unusable; the message names the file and the entry."""


@dataclass(frozen=True)
class Tier:
    name: str
    weight: float

    @property
    def blocked(self) -> bool:
        return self.name == BLOCKED_TIER


@dataclass(frozen=True)
class _Rule:
    tier: Tier
    name: str
    wildcard: bool

    @property
    def specificity(self) -> tuple[int, int, int]:
        return (len(self.name.split(".")), int(self.tier.blocked), int(not self.wildcard))

    def matches(self, domain: str) -> bool:
        if domain.endswith("." + self.name):
            return True
        return not self.wildcard and domain == self.name


def _normalise_domain(text: str) -> tuple[str, bool]:
    raw = text.strip().lower().rstrip(".")
    wildcard = raw.startswith("*.")
    name = raw[2:] if wildcard else raw
    try:
        name = name.encode("idna").decode("ascii") if name else name
    except UnicodeError:
        raise ValueError(f"{text!r} is not a domain name") from None
    if not name or "*" in name or "/" in name or ":" in name or " " in name:
        raise ValueError(f"{text!r} is not a domain name or *.suffix")
    return name, wildcard


class DomainTiers:
    """Which tier a domain is in."""

    def __init__(self, tiers: Mapping[str, tuple[float, Iterable[str]]]) -> None:
        self.tiers = {
            name: Tier(name, 0.0 if name == BLOCKED_TIER else weight)
            for name, (weight, _) in tiers.items()
        }
        rules: list[_Rule] = []
        for name, (_, domains) in tiers.items():
            for domain in domains:
                host, wildcard = _normalise_domain(domain)
                rules.append(_Rule(self.tiers[name], host, wildcard))
        self._rules = sorted(rules, key=lambda r: r.specificity, reverse=True)

    @classmethod
    def defaults(cls) -> DomainTiers:
        return cls(DEFAULT_TIERS)

    @classmethod
    def load(cls, path: str | Path | None) -> DomainTiers:
        """The default tiers, with the tiers of the file at `path` (YAML or JSON) over them."""
        merged: dict[str, tuple[float, Iterable[str]]] = dict(DEFAULT_TIERS)
        if path:
            merged.update(parse_tiers_file(Path(path)))
        return cls(merged)

    def tier_of(self, domain: str) -> Tier | None:
        host = domain.strip().lower().rstrip(".")
        for rule in self._rules:
            if rule.matches(host):
                return rule.tier
        return None

    def is_blocked(self, domain: str) -> bool:
        tier = self.tier_of(domain)
        return tier is not None and tier.blocked


def parse_tiers_file(path: Path) -> dict[str, tuple[float, tuple[str, ...]]]:
    """The tiers of an operator's file, or TiersError naming what is wrong."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TiersError(f"domain tiers file {path} cannot be read: {exc.strerror}") from None
    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TiersError(f"domain tiers file {path} is not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise TiersError(f"domain tiers file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TiersError(f"domain tiers file {path} must map tier names to weight and domains")
    tiers: dict[str, tuple[float, tuple[str, ...]]] = {}
    for name, entry in data.items():
        where = f"domain tiers file {path}, tier {name!r}"
        if not isinstance(name, str) or not name.strip():
            raise TiersError(f"{where}: a tier name must be a non-empty string")
        if not isinstance(entry, dict):
            raise TiersError(f"{where}: must be a mapping with 'weight' and 'domains'")
        unknown = set(entry) - {"weight", "domains"}
        if unknown:
            raise TiersError(f"{where}: unknown keys {sorted(unknown)} (weight, domains)")
        weight = entry.get("weight", 0.0)
        if name == BLOCKED_TIER:
            weight = 0.0
        elif (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not -MAX_TIER_WEIGHT <= weight <= MAX_TIER_WEIGHT
        ):
            raise TiersError(
                f"{where}: weight must be a number from {-MAX_TIER_WEIGHT} to {MAX_TIER_WEIGHT}"
            )
        domains = entry.get("domains", [])
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise TiersError(f"{where}: domains must be a list of domain names")
        for domain in domains:
            try:
                _normalise_domain(domain)
            except ValueError as exc:
                raise TiersError(f"{where}: {exc}") from None
        tiers[name.strip()] = (float(weight), tuple(domains))
    return tiers


@dataclass(frozen=True)
class Reason:
    signal: str
    """domain_tier, https, author, date, agreement, cited_by, pinned, blocked."""
    weight: float
    detail: str


@dataclass(frozen=True)
class Score:
    value: float
    reasons: list[Reason] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Signals:
    domain: str
    https: bool
    author: str = ""
    published: datetime | None = None
    now: datetime
    tier: Tier | None = None
    agreement: int = 0
    """Independent sources (other domains) that agree with it."""
    disagreement: int = 0
    """Independent sources that contradict it."""
    cited_by: int = 0
    """Other sources that link to it."""
    pinned: bool = False
    blocked: bool = False


def score(signals: Signals) -> Score:
    """The credibility of a source from its signals (the module docstring lists the weights)."""
    s = signals
    if s.blocked:
        return Score(0.0, [Reason("blocked", -BASE, "blocked by the tenant")])
    if s.tier is not None and s.tier.blocked:
        return Score(0.0, [Reason("blocked", -BASE, f"domain {s.domain} is in the blocked tier")])
    reasons: list[Reason] = []
    if s.tier is not None:
        reasons.append(
            Reason("domain_tier", s.tier.weight, f"domain {s.domain} is in tier {s.tier.name!r}")
        )
    if s.https:
        reasons.append(Reason("https", HTTPS, "served over https"))
    else:
        reasons.append(Reason("https", HTTP, "served over plain http"))
    if s.author.strip():
        reasons.append(Reason("author", AUTHOR, f"author named: {s.author.strip()[:100]}"))
    else:
        reasons.append(Reason("author", NO_AUTHOR, "no author found"))
    if s.published is None:
        reasons.append(Reason("date", UNDATED, "no publication date found"))
    elif s.published > s.now + timedelta(days=1):
        reasons.append(Reason("date", FUTURE_DATE, f"dated {s.published.date()}, in the future"))
    else:
        reasons.append(Reason("date", DATED, f"published {s.published.date()}"))
    if s.agreement > 0:
        weight = min(s.agreement * AGREEMENT_EACH, AGREEMENT_CAP)
        reasons.append(
            Reason("agreement", weight, f"{s.agreement} independent source(s) agree with it")
        )
    if s.disagreement > 0:
        weight = -min(s.disagreement * AGREEMENT_EACH, AGREEMENT_CAP)
        reasons.append(
            Reason("agreement", weight, f"{s.disagreement} independent source(s) contradict it")
        )
    if s.cited_by > 0:
        weight = min(s.cited_by * CITED_BY_EACH, CITED_BY_CAP)
        reasons.append(Reason("cited_by", weight, f"{s.cited_by} other source(s) link to it"))
    value = BASE + sum(r.weight for r in reasons)
    if s.pinned:
        reasons.append(Reason("pinned", PINNED, "pinned as trusted by the tenant"))
        value = max(value + PINNED, PINNED_FLOOR)
    return Score(round(min(max(value, 0.0), 1.0), 4), [_rounded(r) for r in reasons])


def _rounded(reason: Reason) -> Reason:
    return Reason(reason.signal, round(reason.weight, 4), reason.detail)
