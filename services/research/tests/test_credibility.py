"""The URL-only credibility prior, as a pure function."""

from __future__ import annotations

import pytest
from edrs_core.outbound import OutboundPolicy
from edrs_research.credibility import prior
from edrs_research.urls import normalise


def score(url: str) -> float:
    return prior(normalise(url, OutboundPolicy()))


def test_plain_https_site_is_neutral_plus_transport() -> None:
    assert score("https://example.com/") == 0.6
    assert score("http://example.com/") == 0.4


@pytest.mark.parametrize(
    "url",
    [
        "https://www.nasa.gov/",
        "https://army.mil/",
        "https://www.gov.uk/guidance",
        "https://www.data.gouv.fr/",
        "https://www.go.jp/",
    ],
)
def test_government_sites_score_highest(url: str) -> None:
    assert score(url) == 0.9


@pytest.mark.parametrize(
    "url",
    [
        "https://mit.edu/",
        "https://www.ox.ac.uk/",
        "https://www.unimelb.edu.au/",
        "https://who.int/",
    ],
)
def test_academic_sites_score_high(url: str) -> None:
    assert score(url) == 0.85


def test_org_scores_a_little_above_com() -> None:
    assert score("https://wikipedia.org/") > score("https://example.com/")


def test_institutional_label_only_counts_at_the_end_of_the_host() -> None:
    assert score("https://gov.example.com/") == score("https://example.com/")
    assert score("https://nasa.gov.evil.com/") == score("https://example.com/")


def test_raw_ip_scores_low() -> None:
    assert score("http://8.8.8.8/") == pytest.approx(0.1)
    assert score("https://8.8.8.8/") < score("https://example.com/")


def test_odd_port_and_punycode_lower_the_score() -> None:
    assert score("https://example.com:8443/") < score("https://example.com/")
    assert score("https://exämple.com/") < score("https://example.com/")


def test_score_stays_within_zero_and_one() -> None:
    for url in ("http://8.8.8.8:8080/", "https://nasa.gov/", "https://xn--exmple-cua.gov:8443/"):
        assert 0.0 <= score(url) <= 1.0
