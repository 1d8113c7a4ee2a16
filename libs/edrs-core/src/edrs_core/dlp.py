"""Data loss prevention's scanner: find secrets and personal data in text and JSON documents, and
redact them. Pure (no I/O): the gateway applies it to what clients send (edrs_gateway.edge.dlp,
with the tenant's policy and the audit log), the knowledge service to the text it reads from files
the gateway cannot read (PDF, DOCX).

Detectors cover: US SSN and UK NINO (other national ids are not detected yet), payment cards
(Luhn-checked), API keys and secrets (AWS, GitHub, Slack, OpenAI-style, Google, PEM private keys,
JWTs, our own `edrs_` keys), email addresses, phone numbers, credentials in connection strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from stdnum import luhn
from stdnum.us import ssn

DlpPolicy = Literal["redact", "block"]


@dataclass(frozen=True)
class Match:
    """One finding inside a string: `text[start:end]` is the sensitive part."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Hit:
    """One finding inside a JSON document: its kind and where (RFC 6901 pointer); never the value."""

    kind: str
    pointer: str


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    # Accepts or rejects a regex match (checksums, reserved ranges); None accepts all.
    valid: Callable[[str], bool] | None = None
    # Which group is the sensitive part (e.g. only `user:pass` of a URL); 0 is the whole match.
    group: int | str = 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card_ok(text: str) -> bool:
    number = _digits(text)
    return 13 <= len(number) <= 19 and luhn.is_valid(number)


def _ssn_ok(text: str) -> bool:
    # python-stdnum refuses area 000, 666 and 900-999, group 00, serial 0000 and known
    # advertising numbers (e.g. 078-05-1120).
    return bool(ssn.is_valid(_digits(text)))


_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _nino_ok(text: str) -> bool:
    return text[:2].upper() not in _NINO_BAD_PREFIXES


# Order is priority: when two findings overlap, the earlier detector wins (a JWT is not also
# reported as a phone number, a connection string's password not as an email).
DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*\Z)",  # a truncated block too
            re.S,
        ),
    ),
    Detector("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    Detector("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    Detector(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ),
    Detector("slack_token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    Detector(
        "openai_key",
        re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"),
    ),
    Detector("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    # Our own API keys: `edrs_` then a long token holding a digit (so that identifiers such as
    # edrs_gateway_settings are not taken for keys).
    Detector("edrs_api_key", re.compile(r"\bedrs_(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}")),
    # scheme://user:password@host — only `user:password` is sensitive. The password runs to the
    # last @ before the host, since passwords may hold @.
    Detector(
        "connection_credentials",
        re.compile(
            r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://(?P<cred>[^\s:/?#@]*:[^\s/?#]+)@[A-Za-z0-9\[._-]"
        ),
        group="cred",
    ),
    # 13-19 digits in groups separated by single spaces or dashes, starting 2-6 (the issuer
    # ranges of the card networks), not inside a longer run of digits.
    Detector(
        "payment_card", re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d])"), valid=_card_ok
    ),
    Detector("us_ssn", re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])"), valid=_ssn_ok),
    # UK NINO: two prefix letters (D, F, I, Q, U, V never; O never second), six digits, A-D.
    Detector(
        "uk_nino",
        re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
        valid=_nino_ok,
    ),
    Detector(
        "email",
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
        ),
    ),
)

PHONE_KIND = "phone"
# A UUID's groups of hex digits can pass for a card number (Luhn holds for about 1 in 600 random
# version-7 ids) or a phone number: ids are not client data, so a finding inside one is dropped.
# A finding that only overlaps one (a connection string whose password is a UUID) is kept.
_UUID = re.compile(
    r"(?<![0-9A-Za-z-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Za-z-])"
)
_PHONE_HINT = re.compile(r"(?:\d\D{0,3}){7}")  # seven digits close together, else no phone


class DlpScanner:
    """Finds sensitive data in strings and JSON documents. Pure: no I/O, safe to share.

    Phone numbers are found with libphonenumber's matcher (valid numbers only, which skips dates,
    times and most ids): international `+` numbers always, national formats of `phone_regions`.
    """

    def __init__(
        self,
        detectors: Sequence[Detector] = DETECTORS,
        *,
        phone_regions: Sequence[str] = ("US", "GB"),
    ) -> None:
        self.detectors = tuple(detectors)
        self.phone_regions = tuple(phone_regions)

    def find(self, text: str) -> list[Match]:
        """Non-overlapping findings in `text`, in order of position."""
        found: list[Match] = []
        for detector in self.detectors:
            for m in detector.pattern.finditer(text):
                if detector.valid is None or detector.valid(m.group(0)):
                    found.append(
                        Match(detector.kind, m.start(detector.group), m.end(detector.group))
                    )
        if self.phone_regions and _PHONE_HINT.search(text):
            for region in self.phone_regions:
                for pm in phonenumbers.PhoneNumberMatcher(
                    text, region, leniency=phonenumbers.Leniency.VALID
                ):
                    found.append(Match(PHONE_KIND, pm.start, pm.end))
        ids = [(u.start(), u.end()) for u in _UUID.finditer(text)] if "-" in text else []
        kept: list[Match] = []
        for match in found:  # already in priority order
            if any(start <= match.start and match.end <= end for start, end in ids):
                continue
            if all(match.end <= k.start or match.start >= k.end for k in kept):
                kept.append(match)
        return sorted(kept, key=lambda m: m.start)

    def redact(self, text: str) -> tuple[str, list[Match]]:
        """`text` with each finding replaced by `[REDACTED:<kind>]`, and the findings."""
        matches = self.find(text)
        if not matches:
            return text, []
        parts, last = [], 0
        for m in matches:
            parts += [text[last : m.start], f"[REDACTED:{m.kind}]"]
            last = m.end
        parts.append(text[last:])
        return "".join(parts), matches

    def scan_json(self, document: Any) -> tuple[Any, list[Hit]]:
        """A copy of `document` with every string value redacted, and where each hit was.

        Object keys are left alone: they are field names chosen by the API, not client text."""
        hits: list[Hit] = []
        return self._walk(document, "", hits), hits

    def _walk(self, value: Any, pointer: str, hits: list[Hit]) -> Any:
        if isinstance(value, str):
            clean, matches = self.redact(value)
            hits.extend(Hit(m.kind, pointer) for m in matches)
            return clean
        if isinstance(value, dict):
            return {k: self._walk(v, f"{pointer}/{_escape(k)}", hits) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, f"{pointer}/{i}", hits) for i, v in enumerate(value)]
        return value


def _escape(token: str) -> str:
    # RFC 6901: "~" and "/" inside a member name.
    return token.replace("~", "~0").replace("/", "~1")
