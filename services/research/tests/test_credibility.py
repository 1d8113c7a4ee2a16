"""Credibility: each signal's documented weight, the reasons, and the operator's domain tiers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from edrs_research import credibility
from edrs_research.credibility import DomainTiers, Reason, Signals, Tier, TiersError, score

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DEFAULTS = DomainTiers.defaults()


def signals(**overrides) -> Signals:  # type: ignore[no-untyped-def]
    values = {"domain": "example.com", "https": True, "now": NOW}
    values.update(overrides)
    return Signals(**values)


def test_an_unread_https_page_of_an_unknown_domain() -> None:
    s = score(signals())
    assert s.value == 0.45
    assert s.reasons == [
        Reason("https", 0.05, "served over https"),
        Reason("author", -0.05, "no author found"),
        Reason("date", -0.05, "no publication date found"),
    ]


def test_every_positive_signal_adds_its_weight() -> None:
    s = score(
        signals(
            domain="en.wikipedia.org",
            tier=DEFAULTS.tier_of("en.wikipedia.org"),
            author="Jane Roe",
            published=NOW - timedelta(days=30),
            agreement=2,
            cited_by=1,
        )
    )
    weights = {r.signal: r.weight for r in s.reasons}
    assert weights == {
        "domain_tier": 0.20,
        "https": 0.05,
        "author": 0.05,
        "date": 0.05,
        "agreement": 0.10,
        "cited_by": 0.03,
    }
    assert s.value == pytest.approx(0.5 + sum(weights.values()))
    assert "tier 'reference'" in next(r.detail for r in s.reasons if r.signal == "domain_tier")


def test_agreement_and_citations_are_capped_and_disagreement_lowers() -> None:
    high = score(signals(agreement=10, cited_by=10))
    assert {r.signal: r.weight for r in high.reasons}["agreement"] == credibility.AGREEMENT_CAP
    assert {r.signal: r.weight for r in high.reasons}["cited_by"] == credibility.CITED_BY_CAP
    low = score(signals(disagreement=2))
    assert low.value == pytest.approx(0.45 - 0.10)
    assert Reason("agreement", -0.1, "2 independent source(s) contradict it") in low.reasons


def test_http_and_a_future_date_lower_the_score() -> None:
    s = score(signals(https=False, published=NOW + timedelta(days=30)))
    assert s.value == pytest.approx(0.5 - 0.10 - 0.05 - 0.10)
    assert "in the future" in s.reasons[-1].detail


def test_a_low_credibility_page_ranks_below_an_authored_dated_one() -> None:
    planted = score(signals(domain="rumours.example", https=False))
    real = score(signals(author="Jane Roe", published=NOW - timedelta(days=3)))
    assert planted.value < real.value


def test_pinned_is_at_least_the_floor_and_blocked_is_zero() -> None:
    pinned = score(signals(https=False, pinned=True))
    assert pinned.value == credibility.PINNED_FLOOR
    assert pinned.reasons[-1].signal == "pinned"
    assert score(signals(pinned=True, author="A", published=NOW)).value == pytest.approx(
        0.5 + 0.15 + 0.25
    )
    blocked = score(signals(blocked=True, tier=DEFAULTS.tier_of("x.gov")))
    assert blocked == credibility.Score(0.0, [Reason("blocked", -0.5, "blocked by the tenant")])


def test_the_value_stays_within_zero_and_one() -> None:
    top = score(
        signals(
            tier=Tier("custom", 0.5),
            author="A",
            published=NOW,
            agreement=9,
            cited_by=9,
            pinned=True,
        )
    )
    bottom = score(signals(tier=Tier("custom", -0.5), https=False, disagreement=9))
    assert top.value == 1.0 and bottom.value == 0.0


@pytest.mark.parametrize(
    ("domain", "tier"),
    [
        ("www.nasa.gov", "government"),
        ("gov", None),
        ("gov.example.com", None),
        ("www.ox.ac.uk", "academic"),
        ("wikipedia.org", "reference"),
        ("de.wikipedia.org", "reference"),
        ("notwikipedia.org", "organisation"),
        ("www.reuters.com", "news"),
        ("someone.medium.com", "user_generated"),
        ("example.com", None),
    ],
)
def test_default_tiers(domain: str, tier: str | None) -> None:
    found = DEFAULTS.tier_of(domain)
    assert (found.name if found else None) == tier


def test_an_operators_file_replaces_tiers_by_name_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(
        "reference:\n  weight: 0.3\n  domains: [miniweb-wiki.test]\n"
        "blocked:\n  domains: ['*.spam.test', rumours.test]\n"
        "trusted_partners:\n  weight: 0.15\n  domains: [partner.example]\n"
    )
    tiers = DomainTiers.load(path)
    assert tiers.tier_of("miniweb-wiki.test") == Tier("reference", 0.3)
    # The default reference tier is replaced: Wikipedia falls to the default "*.org" tier.
    assert tiers.tier_of("en.wikipedia.org") == Tier("organisation", 0.05)
    assert tiers.tier_of("www.nasa.gov") == Tier("government", 0.30)
    assert tiers.tier_of("partner.example") == Tier("trusted_partners", 0.15)
    assert tiers.is_blocked("a.b.spam.test") and tiers.is_blocked("rumours.test")
    assert not tiers.is_blocked("spam.test")  # *.suffix: the subdomains only
    assert score(signals(domain="rumours.test", tier=tiers.tier_of("rumours.test"))).value == 0.0


def test_the_most_specific_rule_wins_and_blocked_wins_a_tie(tmp_path: Path) -> None:
    path = tmp_path / "tiers.json"
    path.write_text(
        json.dumps(
            {
                "news": {"weight": 0.1, "domains": ["paper.example"]},
                "blocked": {"domains": ["ads.paper.example", "*.org"]},
            }
        )
    )
    tiers = DomainTiers.load(path)
    assert tiers.tier_of("www.paper.example") == Tier("news", 0.1)
    assert tiers.is_blocked("x.ads.paper.example")
    assert tiers.is_blocked("anything.org")  # ties with the default "*.org" tier: blocked wins
    assert tiers.tier_of("en.wikipedia.org") == Tier("reference", 0.2)  # more labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list", "must map tier names"),
        ("news: [a.example]", "must be a mapping with 'weight' and 'domains'"),
        ("news: {weight: 2, domains: []}", "weight must be a number from -0.5 to 0.5"),
        ("news: {weight: true, domains: []}", "weight must be a number"),
        ("news: {weight: 0.1, domains: a.example}", "domains must be a list"),
        ("news: {weight: 0.1, domains: ['a b']}", "is not a domain name"),
        ("news: {weight: 0.1, domain: []}", "unknown keys ['domain']"),
        ("news: {weight: [", "is not valid YAML"),
    ],
)
def test_a_bad_tiers_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(TiersError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DomainTiers.load(path)


def test_a_missing_tiers_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TiersError, match="cannot be read"):
        DomainTiers.load(tmp_path / "absent.yaml")
