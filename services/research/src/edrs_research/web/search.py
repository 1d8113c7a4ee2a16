"""Web search providers behind one port: `SearchProvider.search(query, limit=...)`.

    provider = build_provider(settings, client)       # by EDRS_RESEARCH_SEARCH_PROVIDER
    hits = await provider.search("moon orbit period", limit=10)

Adapters, all through the SSRF-safe outbound client:
    searxng  GET {search_url}/search?q=...&format=json   (a SearxNG instance with JSON enabled;
             the tests' mini-web answers the same way)
    brave    GET {search_url or https://api.search.brave.com}/res/v1/web/search?q=...&count=N,
             header X-Subscription-Token: the API key
    tavily   POST {search_url or https://api.tavily.com}/search {"query", "max_results",
             "search_depth": "basic"}, header Authorization: Bearer the API key
    none     no web search (`NoSearch`, every search returns nothing)

The API key comes from the setting `EDRS_RESEARCH_SEARCH_API_KEY` (or a caller's key source,
such as the secret store); it is sent only in its header and never logged or put in an error.
A provider failure is a `SearchFailed` whose reason names the provider and what went wrong.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from edrs_core.outbound import OutboundClient, OutboundError
from pydantic import SecretStr

MAX_QUERY_LENGTH = 500
MAX_LIMIT = 50
BRAVE_URL = "https://api.search.brave.com"
TAVILY_URL = "https://api.tavily.com"
PROVIDERS = ("searxng", "brave", "tavily", "none")

KeySource = Callable[[], Awaitable[str]]
"""Gives the provider's API key when a request needs it (settings, or the secret store)."""

_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SearchHit:
    url: str
    title: str
    snippet: str
    rank: int
    """1-based position in the provider's answer."""


class SearchFailed(Exception):
    """The provider could not answer; `reason` names it and why (never the API key)."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"search provider {provider} {reason}")
        self.provider = provider
        self.reason = reason


class SearchProvider(Protocol):
    name: str

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Up to `limit` hits for `query`, best first; SearchFailed when the provider fails."""
        ...


def static_key(secret: SecretStr | str) -> KeySource:
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret

    async def key() -> str:
        return value

    return key


def _check(query: str, limit: int) -> str:
    text = " ".join(query.split())
    if not text:
        raise ValueError("query must not be empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise ValueError(f"query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    return text


def _plain(text: Any) -> str:
    """A snippet without the provider's highlighting markup."""
    if not isinstance(text, str):
        return ""
    return " ".join(html.unescape(_TAG.sub("", text)).split())


def _hits(provider: str, items: Any, limit: int, snippet_key: str) -> list[SearchHit]:
    if not isinstance(items, list):
        raise SearchFailed(provider, "answered without a list of results")
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        hits.append(
            SearchHit(
                url=url,
                title=_plain(item.get("title")),
                snippet=_plain(item.get(snippet_key)),
                rank=len(hits) + 1,
            )
        )
        if len(hits) >= limit:
            break
    return hits


class _HttpProvider:
    name = ""

    def __init__(self, client: OutboundClient, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except OutboundError as exc:
            raise SearchFailed(self.name, f"could not be reached: {exc}") from None
        if response.status != 200:
            raise SearchFailed(self.name, f"answered with HTTP status {response.status}")
        try:
            return response.json()
        except ValueError:
            raise SearchFailed(self.name, "answered with something other than JSON") from None


class SearxngSearch(_HttpProvider):
    """A SearxNG instance (its JSON output format must be enabled)."""

    name = "searxng"

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        text = _check(query, limit)
        url = f"{self.base_url}/search?{urlencode({'q': text, 'format': 'json'})}"
        body = await self._call("GET", url, headers={"Accept": "application/json"})
        if not isinstance(body, dict):
            raise SearchFailed(self.name, "answered without a JSON object")
        return _hits(self.name, body.get("results"), limit, "content")


class BraveSearch(_HttpProvider):
    """The Brave Search API's web search."""

    name = "brave"
    MAX_COUNT = 20

    def __init__(self, client: OutboundClient, key: KeySource, base_url: str = BRAVE_URL) -> None:
        super().__init__(client, base_url)
        self._key = key

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        text = _check(query, limit)
        params = {"q": text, "count": str(min(limit, self.MAX_COUNT))}
        body = await self._call(
            "GET",
            f"{self.base_url}/res/v1/web/search?{urlencode(params)}",
            headers={"Accept": "application/json", "X-Subscription-Token": await self._key()},
        )
        web = body.get("web") if isinstance(body, dict) else None
        if web is None:  # no web results at all (e.g. only news) is an empty answer
            if isinstance(body, dict):
                return []
            raise SearchFailed(self.name, "answered without a JSON object")
        if not isinstance(web, dict):
            raise SearchFailed(self.name, "answered with a 'web' that is not an object")
        return _hits(self.name, web.get("results", []), limit, "description")


class TavilySearch(_HttpProvider):
    """Tavily's search API."""

    name = "tavily"
    MAX_RESULTS = 20

    def __init__(self, client: OutboundClient, key: KeySource, base_url: str = TAVILY_URL) -> None:
        super().__init__(client, base_url)
        self._key = key

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        text = _check(query, limit)
        body = await self._call(
            "POST",
            f"{self.base_url}/search",
            json={
                "query": text,
                "max_results": min(limit, self.MAX_RESULTS),
                "search_depth": "basic",
                "include_answer": False,
                "include_raw_content": False,
            },
            headers={"Accept": "application/json", "Authorization": f"Bearer {await self._key()}"},
        )
        if not isinstance(body, dict):
            raise SearchFailed(self.name, "answered without a JSON object")
        return _hits(self.name, body.get("results"), limit, "content")


class NoSearch:
    """No web search configured: every query finds nothing."""

    name = "none"

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        _check(query, limit)
        return []


def build_provider(
    provider: str,
    client: OutboundClient,
    *,
    url: str = "",
    key: KeySource | None = None,
) -> SearchProvider:
    """The provider named `provider` (one of PROVIDERS); ValueError when it lacks a setting."""
    if provider == "none":
        return NoSearch()
    if provider == "searxng":
        if not url:
            raise ValueError("the searxng search provider needs a search URL")
        return SearxngSearch(client, url)
    if provider in ("brave", "tavily"):
        if key is None:
            raise ValueError(f"the {provider} search provider needs an API key")
        if provider == "brave":
            return BraveSearch(client, key, url or BRAVE_URL)
        return TavilySearch(client, key, url or TAVILY_URL)
    raise ValueError(f"unknown search provider {provider!r}; one of {', '.join(PROVIDERS)}")
