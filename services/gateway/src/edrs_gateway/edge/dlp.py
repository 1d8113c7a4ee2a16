"""Data loss prevention: find secrets and personal data in what clients send; redact or block it.

Detectors cover: US SSN and UK NINO (other national ids are not detected yet), payment cards
(Luhn-checked), API keys and secrets (AWS, GitHub, Slack, OpenAI-style, Google, PEM private keys,
JWTs, our own `edrs_` keys), email addresses, phone numbers, credentials in connection strings.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import phonenumbers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from stdnum import luhn
from stdnum.us import ssn

from edrs_gateway.api.problems import problem_response
from edrs_gateway.auth.principal import Principal
from edrs_gateway.edge._asgi import is_exempt, principal_of, replace_header

log = logging.getLogger("edrs.gateway.dlp")

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
        kept: list[Match] = []
        for match in found:  # already in priority order
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


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


# Deeper JSON than any route takes: the scan (and the routes' validation) recurse per level, and
# near Python's recursion limit that was an internal error rather than an answer.
MAX_JSON_DEPTH = 64


class TooDeep(ValueError):
    pass


def _parse(body: bytes) -> Any:
    try:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson refuses integers beyond 64 bits (and nesting beyond 1,024) that the stdlib
            # may accept.
            document = json.loads(body)
    except RecursionError:
        raise TooDeep from None
    if deeper_than(document, MAX_JSON_DEPTH):
        raise TooDeep
    return document


def deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (iteratively: no recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class _TtlCache:
    """Tenant -> policy for a few seconds, so a policy change applies quickly without a query per
    request."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, DlpPolicy]] = {}

    def get(self, key: str) -> DlpPolicy | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: DlpPolicy) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.seconds, value)


PolicyOf = Callable[[str], Awaitable[DlpPolicy]]
OnHits = Callable[[Principal | None, list[Hit]], Awaitable[None]]


@dataclass(frozen=True)
class Verdict:
    """What the tenant's policy made of a document: its redacted copy, the hits, and whether the
    policy blocks it."""

    clean: Any
    hits: list[Hit]
    blocked: bool


class DlpGuard:
    """Scan a document, report its hits and apply the caller's tenant policy (cached a few
    seconds). The HTTP middleware uses it for bodies; the WebSocket for each message frame."""

    def __init__(
        self,
        scanner: DlpScanner,
        policy_of: PolicyOf,
        on_hits: OnHits,
        *,
        policy_cache_seconds: float = 30.0,
        anonymous_policy: DlpPolicy = "redact",
    ) -> None:
        self.scanner = scanner
        self.policy_of = policy_of
        self.on_hits = on_hits
        self.anonymous_policy = anonymous_policy
        self._policies = _TtlCache(policy_cache_seconds)

    async def policy(self, principal: Principal | None) -> DlpPolicy:
        if principal is None:
            return self.anonymous_policy
        cached = self._policies.get(principal.tenant_id)
        if cached is None:
            cached = await self.policy_of(principal.tenant_id)
            self._policies.put(principal.tenant_id, cached)
        return cached

    async def inspect(self, principal: Principal | None, document: Any) -> Verdict:
        clean, hits = self.scanner.scan_json(document)
        if not hits:
            return Verdict(document, [], blocked=False)
        try:
            await self.on_hits(principal, hits)
        except Exception:
            # A failing audit sink must not let the data through unredacted, nor fail the call.
            log.exception("recording %d DLP hits failed", len(hits))
        return Verdict(clean, hits, blocked=await self.policy(principal) == "block")


def blocked_problem(hits: Sequence[Hit]) -> tuple[str, list[dict[str, Any]]]:
    """The detail and `errors` of a 422 `sensitive_data_blocked`."""
    kinds = sorted({h.kind for h in hits})
    detail = f"the request holds sensitive data ({', '.join(kinds)}); remove it and retry"
    errors = [
        {"in": "body", "pointer": h.pointer, "kind": h.kind, "detail": f"{h.kind} found"}
        for h in hits
    ]
    return detail, errors


class DlpMiddleware:
    """Pure ASGI: scan JSON bodies of POST/PUT/PATCH before the app sees them.

    Under the tenant's policy "redact" the body is rewritten; under "block" the request is answered
    422 `sensitive_data_blocked` listing kinds and JSON pointers. `on_hits(principal, hits)` is
    awaited for every request with findings (kinds and pointers only). Anonymous requests use
    `anonymous_policy`.
    """

    def __init__(
        self,
        app: ASGIApp,
        scanner: DlpScanner,
        policy_of: PolicyOf,
        on_hits: OnHits,
        *,
        exempt_paths: Sequence[str] = ("/api/v1/auth/",),
        policy_cache_seconds: float = 30.0,
        anonymous_policy: DlpPolicy = "redact",
    ) -> None:
        self.app = app
        self.guard = DlpGuard(
            scanner,
            policy_of,
            on_hits,
            policy_cache_seconds=policy_cache_seconds,
            anonymous_policy=anonymous_policy,
        )
        self.exempt_paths = tuple(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or is_exempt(scope["path"], self.exempt_paths)
            or not _is_json(dict(scope["headers"]).get(b"content-type"))
        ):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        try:
            document = _parse(body)
        except TooDeep:
            await problem_response(
                422,
                "validation_failed",
                f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
                instance=scope["path"],
            )(scope, receive, send)
            return
        except ValueError:
            document = None  # not JSON after all: the app's validation answers it
        if document is not None:
            verdict = await self.guard.inspect(principal_of(scope), document)
            if verdict.blocked:
                detail, errors = blocked_problem(verdict.hits)
                await problem_response(
                    422,
                    "sensitive_data_blocked",
                    detail,
                    instance=scope["path"],
                    errors=errors,
                )(scope, receive, send)
                return
            if verdict.hits:
                body = _dump(verdict.clean)
                scope = {
                    **scope,
                    "headers": replace_header(
                        scope["headers"], b"content-length", str(len(body)).encode()
                    ),
                }

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _dump(document: Any) -> bytes:
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(document, ensure_ascii=False).encode()
