"""Fetching one web page for research: through the SSRF-safe outbound client, after robots.txt
allows it, no sooner than the host's rate limit allows, cut at a size limit, and read into its
main text, title, author, publication date, language and outbound links.

    fetcher = Fetcher(client, FetchLimits(max_bytes=5_000_000, host_interval_seconds=1.0))
    page = await fetcher.fetch("https://example.org/a", host_rules=tenant_rules)

Every refusal is a `FetchRefused(kind, reason)`; `kind` is one of `FETCH_REFUSAL_KINDS`:
    policy        the outbound policy refused the URL or an address it resolves to (SSRF rules)
    blocked       the tenant's host lists or the domain tiers' blocked tier refuse the host
    robots        the site's robots.txt disallows the URL for our user agent
    status        the server answered with a status other than 2xx (or redirected too often)
    content_type  the answer is neither HTML nor plain text
    empty         no text could be read from it
    timeout       a time limit ran out
    connection    the host could not be reached or did not answer in valid HTTP

A page larger than `max_bytes` is cut there while it is read (the outbound client stops reading
the body), extracted from what was read, and marked `truncated`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from edrs_core.outbound import (
    HostRules,
    OutboundBlocked,
    OutboundClient,
    OutboundError,
    OutboundInvalidUrl,
    OutboundLimits,
    OutboundResponse,
    OutboundTimeout,
    OutboundTooManyRedirects,
    OutboundUrl,
)

from edrs_research.credibility import DomainTiers

log = logging.getLogger("edrs.research.fetch")

FETCH_REFUSAL_KINDS = (
    "policy",
    "blocked",
    "robots",
    "status",
    "content_type",
    "empty",
    "timeout",
    "connection",
)
DEFAULT_USER_AGENT = "EDRS-Research/0.1 (+https://github.com/edrs)"
ROBOTS_AGENT = "EDRS-Research"
"""The product token robots.txt groups are matched against."""
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_LINKS = 500
MAX_TITLE = 500
_ROBOTS_MAX_BYTES = 512 * 1024
_ROBOTS_CACHE_SIZE = 1024
_MAX_CRAWL_DELAY = 60.0


class FetchRefused(Exception):
    """A page that was not fetched: `kind` (one of FETCH_REFUSAL_KINDS) and `reason`, a sentence
    fragment naming the URL's host and why (never the URL's query, which may carry tokens)."""

    def __init__(self, kind: str, reason: str) -> None:
        assert kind in FETCH_REFUSAL_KINDS, kind
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Page:
    """A fetched page, read."""

    url: str
    """The URL asked for, in the outbound policy's canonical form."""
    final_url: str
    """The URL that answered, after redirects."""
    domain: str
    """The final URL's host (A-label form, no port)."""
    title: str
    author: str
    """Empty when the page names none."""
    published: datetime | None
    """The publication date the page states (midnight UTC of that day), if any."""
    language: str
    """ISO 639-1 code of the text's language, empty when it cannot be told."""
    text: str
    """The main text (boilerplate such as menus and footers removed)."""
    content_hash: str
    """sha256 hex of `text` (UTF-8)."""
    truncated: bool
    """The body was cut at the size limit; the text is from its beginning only."""
    fetched_at: datetime
    https: bool
    links: tuple[str, ...]
    """Absolute http(s) URLs the page links to, without fragments, in order, deduplicated."""
    content_type: str = ""
    status: int = 200


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 5 * 1024 * 1024
    """Largest body read; the rest of a larger page is never read."""
    host_interval_seconds: float = 1.0
    """Least time between the starts of two requests to one host (robots.txt's Crawl-delay,
    when longer, up to 60 s, wins)."""
    robots_ttl_seconds: float = 3600.0
    """How long a host's robots.txt is trusted before it is read again."""
    timeout_seconds: float | None = None
    """Whole request limit; None: the client's."""
    user_agent: str = DEFAULT_USER_AGENT


@dataclass
class _Robots:
    parser: Any  # protego.Protego, or None for "allow everything"
    disallow_all: bool
    expires: float


class Fetcher:
    """Fetches pages for research. One per service (it keeps each host's robots.txt and the time
    of its last request); safe to use from concurrent tasks."""

    def __init__(
        self,
        client: OutboundClient,
        limits: FetchLimits | None = None,
        *,
        tiers: DomainTiers | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.limits = limits or FetchLimits()
        self.tiers = tiers
        self._clock = clock
        self._robots: OrderedDict[str, _Robots] = OrderedDict()
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self._next_slot: dict[str, float] = {}
        self._crawl_delay: dict[str, float] = {}
        self._slot_lock = asyncio.Lock()
        client_limits = client.limits
        self._page_limits = dataclasses.replace(
            client_limits,
            max_response_bytes=self.limits.max_bytes,
            timeout_seconds=self.limits.timeout_seconds or client_limits.timeout_seconds,
        )
        self._robots_limits: OutboundLimits = dataclasses.replace(
            self._page_limits, max_response_bytes=_ROBOTS_MAX_BYTES
        )

    async def fetch(self, url: str, *, host_rules: HostRules | None = None) -> Page:
        """The page at `url`, read; or FetchRefused saying why not."""
        try:
            target = self.client.policy.check_url(url, host_rules)
        except OutboundError as exc:
            raise _refusal(exc) from None
        response = await self._follow(target, host_rules)
        if not 200 <= response.status < 300:
            raise FetchRefused(
                "status",
                f"host {urlsplit(response.url).hostname} answered with HTTP status "
                f"{response.status}",
            )
        final = urlsplit(response.url)
        final_host = final.hostname or target.host
        content_type = str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
        if content_type in HTML_TYPES or (not content_type and _looks_like_html(response.body)):
            read = await asyncio.to_thread(_read_html, response.text(), response.url)
        elif content_type in TEXT_TYPES:
            read = _read_text(response.text())
        else:
            raise FetchRefused(
                "content_type",
                f"host {final_host} answered with content type {content_type or 'none'}, "
                "not HTML or plain text",
            )
        if not read.text.strip():
            raise FetchRefused("empty", f"host {final_host} answered with a page without text")
        language = await asyncio.to_thread(detect_language, read.text) or read.language
        return Page(
            url=target.url,
            final_url=response.url,
            domain=final_host,
            title=read.title[:MAX_TITLE] or response.url,
            author=read.author,
            published=read.published,
            language=language,
            text=read.text,
            content_hash=content_hash(read.text),
            truncated=response.truncated,
            fetched_at=datetime.now(UTC),
            https=final.scheme == "https",
            links=read.links,
            content_type=content_type,
            status=response.status,
        )

    async def _follow(self, target: OutboundUrl, host_rules: HostRules | None) -> OutboundResponse:
        """The answer of `target`, following redirects here (not in the client) so that every
        hop passes the blocked tier, its host's robots.txt and its host's rate limit."""
        current = target
        limit = self.client.limits.max_redirects
        for hop in range(limit + 1):
            if self.tiers is not None and self.tiers.is_blocked(current.host):
                where = f"redirect {hop} location host" if hop else "host"
                raise FetchRefused(
                    "blocked", f"{where} {current.host} is in the blocked domain tier"
                )
            await self._check_robots(current.url, host_rules)
            response = await self._get(
                current.url, host_rules, self._page_limits, truncate=True, follow=False
            )
            location = response.headers.get("location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            try:
                following = self.client.policy.check_url(urljoin(current.url, location), host_rules)
            except OutboundError as exc:
                raise _refusal(exc.at_redirect(hop + 1)) from None
            if current.scheme == "https" and following.scheme == "http":
                raise FetchRefused(
                    "policy", f"redirect {hop + 1} location downgrades https to http"
                )
            current = following
        raise FetchRefused(
            "status", f"host {target.host} redirected more than {limit} times, the limit"
        )

    # --- the host's rate limit -----------------------------------------------------------

    async def _wait_turn(self, host: str) -> None:
        """Waits until a request to `host` may start, and books that slot."""
        interval = max(self.limits.host_interval_seconds, self._crawl_delay.get(host, 0.0))
        async with self._slot_lock:
            now = self._clock()
            slot = max(now, self._next_slot.get(host, now))
            self._next_slot[host] = slot + interval
        delay = slot - now
        if delay > 0:
            await asyncio.sleep(delay)

    async def _get(
        self,
        url: str,
        host_rules: HostRules | None,
        limits: OutboundLimits,
        *,
        truncate: bool,
        follow: bool = True,
    ) -> OutboundResponse:
        host = urlsplit(url).hostname or ""
        await self._wait_turn(host)
        try:
            return await self.client.get(
                url,
                host_rules=host_rules,
                truncate=truncate,
                limits=limits,
                follow_redirects=follow,
                headers={
                    "User-Agent": self.limits.user_agent,
                    "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1",
                },
            )
        except OutboundError as exc:
            raise _refusal(exc) from None

    # --- robots.txt ----------------------------------------------------------------------

    async def _check_robots(self, url: str, host_rules: HostRules | None) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        robots = await self._robots_for(origin, host_rules)
        if robots.disallow_all:
            raise FetchRefused(
                "robots",
                f"host {parts.hostname} could not serve its robots.txt (a server error), "
                "which disallows every page until it can",
            )
        if robots.parser is not None and not robots.parser.can_fetch(url, ROBOTS_AGENT):
            raise FetchRefused(
                "robots", f"host {parts.hostname}'s robots.txt disallows {parts.path or '/'}"
            )

    async def _robots_for(self, origin: str, host_rules: HostRules | None) -> _Robots:
        lock = self._robots_locks.setdefault(origin, asyncio.Lock())
        async with lock:
            cached = self._robots.get(origin)
            if cached is not None and cached.expires > self._clock():
                self._robots.move_to_end(origin)
                return cached
            robots = await self._read_robots(origin, host_rules)
            self._robots[origin] = robots
            self._robots.move_to_end(origin)
            while len(self._robots) > _ROBOTS_CACHE_SIZE:
                old, _ = self._robots.popitem(last=False)
                self._robots_locks.pop(old, None)
            return robots

    async def _read_robots(self, origin: str, host_rules: HostRules | None) -> _Robots:
        from protego import Protego

        expires = self._clock() + self.limits.robots_ttl_seconds
        response = await self._get(
            origin + "/robots.txt", host_rules, self._robots_limits, truncate=True
        )
        host = urlsplit(origin).hostname or ""
        # RFC 9309: a robots.txt that is not there (4xx) allows everything; one the server
        # fails to give (5xx) disallows everything.
        if response.status >= 500:
            return _Robots(None, True, expires)
        if not 200 <= response.status < 300:
            self._crawl_delay.pop(host, None)
            return _Robots(None, False, expires)
        parser = Protego.parse(response.text())
        delay = parser.crawl_delay(ROBOTS_AGENT)
        if delay:
            self._crawl_delay[host] = min(float(delay), _MAX_CRAWL_DELAY)
        else:
            self._crawl_delay.pop(host, None)
        return _Robots(parser, False, expires)


# --- reading a page ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    text: str
    title: str = ""
    author: str = ""
    published: datetime | None = None
    language: str = ""
    links: tuple[str, ...] = ()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _looks_like_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _read_html(markup: str, url: str) -> _Read:
    import trafilatura
    from lxml import etree
    from lxml import html as lxml_html
    from trafilatura.settings import set_date_params

    try:
        tree = lxml_html.fromstring(markup)
    except (etree.ParserError, ValueError):
        return _Read(text="")
    document = trafilatura.bare_extraction(
        tree,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        favor_recall=True,
        # Dates the page states in its markup (meta tags, time elements, JSON-LD, the URL), not
        # any date-like string of the text: "dated" is a credibility signal.
        date_extraction_params=set_date_params(extensive=False),
    )
    text = ""
    title = author = language = ""
    published: datetime | None = None
    if document is not None and not isinstance(document, dict):
        text = document.text or ""
        title = document.title or ""
        author = document.author or ""
        published = _as_datetime(document.date)
        language = (document.language or "")[:2]
    if not text.strip():
        # Too little for the main-content heuristics: take the body's text as it is.
        _, text, _ = trafilatura.baseline(markup)
    if not title:
        found = tree.findtext(".//title")
        title = " ".join(found.split()) if found else ""
    if not language:
        language = (tree.get("lang") or "").split("-")[0].lower()[:2]
    return _Read(
        text=_clean(text, lines_are_paragraphs=True),
        title=" ".join(title.split()),
        author=" ".join(author.split()),
        published=published,
        language=language,
        links=_links(tree, url),
    )


def _read_text(body: str) -> _Read:
    text = _clean(body)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _Read(text=text, title=first[:200])


# The knowledge service's plain-text normalisation (edrs_knowledge.parsing), applied here so the
# text a page is scored and hashed by is the very text the knowledge service stores for it.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\ufffe\uffff]")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")


def _clean(text: str, *, lines_are_paragraphs: bool = False) -> str:
    """Paragraphs separated by one blank line, whitespace inside each collapsed to one space,
    NFC, no control characters. Extracted HTML has one paragraph per line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    parts = text.split("\n") if lines_are_paragraphs else _PARAGRAPH_BREAK.split(text)
    paragraphs = (" ".join(part.split()) for part in parts)
    return "\n\n".join(p for p in paragraphs if p)


def _as_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _links(tree: Any, base: str) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for href in tree.xpath("//a/@href"):
        absolute = urljoin(base, str(href).strip())
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        found.setdefault(urlunsplit(parts._replace(fragment="")), None)
        if len(found) >= MAX_LINKS:
            break
    return tuple(found)


_LANGID_LOADED = threading.Event()
_LANGID_LOCK = threading.Lock()


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text`'s language, or "" when there are too few letters to tell."""
    sample = text[:5000]
    if sum(ch.isalpha() for ch in sample) < 20:
        return ""
    import py3langid

    if not _LANGID_LOADED.is_set():
        # The first call loads the model; concurrent first calls would each load it.
        with _LANGID_LOCK:
            lang, _score = py3langid.classify(sample)
            _LANGID_LOADED.set()
            return str(lang)
    lang, _score = py3langid.classify(sample)
    return str(lang)


def _refusal(exc: OutboundError) -> FetchRefused:
    if isinstance(exc, OutboundBlocked):
        kind = "blocked" if exc.rule in ("tenant_deny", "tenant_allow") else "policy"
        return FetchRefused(kind, str(exc))
    if isinstance(exc, OutboundInvalidUrl):
        return FetchRefused("policy", str(exc))
    if isinstance(exc, OutboundTimeout):
        return FetchRefused("timeout", str(exc))
    if isinstance(exc, OutboundTooManyRedirects):
        return FetchRefused("status", str(exc))
    return FetchRefused("connection", str(exc))
