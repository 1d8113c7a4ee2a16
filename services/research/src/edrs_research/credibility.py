"""A prior credibility score, 0..1, for a source judged from its URL alone, before any content is read.

The prior starts at 0.5 and adds, then clamps to 0..1:

    https                                          +0.10   (http: -0.10)
    government or military (.gov, .mil, gov.uk,
        gouv.fr, go.jp, gob.mx, govt.nz ...)       +0.30
    academic or intergovernmental (.edu, ac.uk,
        edu.au, .int ...)                          +0.25
    .org                                           +0.05
    raw IP address instead of a name               -0.30
    a port other than the scheme's default         -0.10
    a punycode (xn--) label, a homograph risk      -0.05

Only the last two labels of the host count, so "gov.example.com" earns nothing.
Content-based validation refines this later; the prior only orders sources nobody has read yet.
"""

from __future__ import annotations

from edrs_research.urls import SourceUrl

BASE = 0.5
HTTPS = 0.10
GOVERNMENT = 0.30
ACADEMIC = 0.25
ORG = 0.05
IP_LITERAL = -0.30
ODD_PORT = -0.10
PUNYCODE = -0.05

_GOVERNMENT_TLDS = {"gov", "mil"}
# Second-level labels under a country code that countries reserve for government bodies.
_GOVERNMENT_SLDS = {"gov", "gouv", "govt", "go", "gob", "gv", "mil"}
_ACADEMIC_TLDS = {"edu", "int"}
_ACADEMIC_SLDS = {"edu", "ac"}


def _institution(host: str) -> float:
    labels = host.split(".")
    tld = labels[-1]
    # Country-code TLDs are the two-letter ones; only they carry reserved second-level labels.
    sld = labels[-2] if len(labels) >= 3 and len(tld) == 2 else ""
    if tld in _GOVERNMENT_TLDS or sld in _GOVERNMENT_SLDS:
        return GOVERNMENT
    if tld in _ACADEMIC_TLDS or sld in _ACADEMIC_SLDS:
        return ACADEMIC
    if tld == "org":
        return ORG
    return 0.0


def prior(source: SourceUrl) -> float:
    """The URL-only credibility of `source`, 0..1 (see the module docstring for the rules)."""
    score = BASE + (HTTPS if source.scheme == "https" else -HTTPS)
    if source.ip_literal:
        score += IP_LITERAL
    else:
        score += _institution(source.host)
        if any(label.startswith("xn--") for label in source.host.split(".")):
            score += PUNYCODE
    if source.port is not None:
        score += ODD_PORT
    return round(min(max(score, 0.0), 1.0), 4)
