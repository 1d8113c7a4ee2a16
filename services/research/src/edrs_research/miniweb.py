"""The mini-web: several web sites and a SearxNG-compatible search engine, served on loopback by
the tests and benchmarks themselves.

    web = MiniWeb([
        Site("news.miniweb.test", pages={"/a": Page("<html>...</html>")}, robots="User-agent: *\\n"),
        Site("wiki.miniweb.test", pages={"/big": LargePage(50_000_000), "/old": Redirect("/a")}),
    ])
    async with web:
        web.url("news.miniweb.test", "/a")     # http://news.miniweb.test:<port>/a
        web.resolve_entries()                  # ["news.miniweb.test=127.0.0.1", ...]
        web.search_url                         # http://search.miniweb.test:<port>

One uvicorn server on 127.0.0.1 answers for every site, choosing the site by the Host header; the
names reach it through the outbound client's static resolver (`EDRS_<SERVICE>_OUTBOUND_RESOLVE`,
`edrs_core.outbound.static_resolver`) with loopback opened by an operator allow rule, exactly as
a deployment would open an intranet host.

`GET /search?q=...&format=json` on the search host answers like SearxNG:
`{"query": q, "results": [{"url", "title", "content", "engine", "score"}, ...]}`, ranking the
mini-web's pages by how often the query's words occur in them (title words count double), after
any results a test planted (`plant`), e.g. the SSRF table's URLs.

Every request is recorded (`requests`) with the server's own monotonic time, so a test can count
what the server saw and how far apart, without timing anything on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

import uvicorn
from starlette.types import Receive, Scope, Send

SEARCH_HOST = "search.miniweb.test"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TAG = re.compile(r"<[^>]+>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Page:
    """A page served whole: HTML (the default) or any other content type."""

    body: str | bytes
    content_type: str = HTML
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    searchable: bool = True
    """Whether the search endpoint may return it."""

    def encoded(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body

    def text(self) -> str:
        """Its words for the search ranking (tags stripped from HTML)."""
        raw = self.body if isinstance(self.body, str) else self.body.decode("utf-8", "replace")
        if "html" in self.content_type:
            raw = html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", raw)))
        return raw

    def title(self) -> str:
        if "html" not in self.content_type:
            return ""
        raw = self.body if isinstance(self.body, str) else self.body.decode("utf-8", "replace")
        found = _TITLE.search(raw)
        return html.unescape(found.group(1)).strip() if found else ""


@dataclass(frozen=True)
class LargePage:
    """An HTML page of `size` bytes, generated chunk by chunk as it is sent (never built whole):
    for size limits. `declare_length` sends a Content-Length (else the body ends with the
    connection)."""

    size: int
    title: str = "A very large page"
    declare_length: bool = True
    chunk: int = 64 * 1024


@dataclass(frozen=True)
class SlowPage:
    """`page`, sent only after `delay` seconds (or never, if the server stops first)."""

    delay: float
    page: Page


@dataclass(frozen=True)
class Redirect:
    """A redirect to `location` (a path on the same site or an absolute URL)."""

    location: str
    status: int = 302


Served = Page | LargePage | SlowPage | Redirect


@dataclass(frozen=True)
class Site:
    """One web site: its host name, its pages by path, and its robots.txt (None: 404)."""

    host: str
    pages: Mapping[str, Served] = field(default_factory=dict)
    robots: str | None = None


@dataclass(frozen=True)
class SeenRequest:
    """A request the mini-web received, with the server's monotonic clock when it arrived."""

    host: str
    path: str
    query: str
    at: float
    user_agent: str


@dataclass(frozen=True)
class SearchResult:
    url: str
    title: str = ""
    content: str = ""


@dataclass
class _Planted:
    result: SearchResult
    words: frozenset[str]
    """The query must contain all of these words (none: every query)."""


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process owns its signals.
        yield


class MiniWeb:
    """The mini-web's server. Sites and planted search results may be added while it runs."""

    def __init__(self, sites: Iterable[Site] = (), *, address: str = "127.0.0.1") -> None:
        self.address = address
        self.port = 0
        self.sites: dict[str, Site] = {}
        for site in sites:
            self.add(site)
        self.requests: list[SeenRequest] = []
        self.searches: list[str] = []
        """The queries the search endpoint answered, in order."""
        self.large_sent: dict[str, int] = {}
        """Bytes of each LargePage (by URL path) handed to the server before the client went
        away or the page ended."""
        self.large_done: set[str] = set()
        """Paths of the LargePages whose sending ended (the page was whole, or the client left)."""
        self._planted: list[_Planted] = []
        self._stopping = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    # --- content ---------------------------------------------------------------------------

    def add(self, site: Site) -> None:
        self.sites[site.host.lower()] = site

    def plant(self, url: str, title: str = "", content: str = "", *, when: str = "") -> None:
        """Put `url` at the top of the results of every query containing all words of `when`
        (every query when empty), in planting order, before the ranked pages."""
        self._planted.append(_Planted(SearchResult(url, title, content), frozenset(words(when))))

    # --- addresses -------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return [*self.sites, SEARCH_HOST]

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def search_url(self) -> str:
        """The search engine's base URL (SearxNG's `/search` is under it)."""
        return f"http://{SEARCH_HOST}:{self.port}"

    def resolve_entries(self) -> list[str]:
        """`host=address` for every host it serves (the outbound resolve setting's entries)."""
        return [f"{host}={self.address}" for host in self.hosts]

    def research_settings(self, *, search: bool = True) -> dict[str, Any]:
        """The research service settings that reach this mini-web, as a deployment would: the
        resolve setting maps its host names to loopback, the operator's allow rule opens those
        names (not loopback itself), and the search provider is its SearxNG endpoint. Sites added
        later are not in them."""
        values: dict[str, Any] = {
            "outbound_allow": tuple(self.hosts),
            "outbound_resolve": tuple(self.resolve_entries()),
        }
        if search:
            values.update(search_provider="searxng", search_url=self.search_url)
        return values

    def requests_to(self, host: str, path: str | None = None) -> list[SeenRequest]:
        return [r for r in self.requests if r.host == host and (path is None or r.path == path)]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        config = uvicorn.Config(
            self._app,
            host=self.address,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=2,
        )
        self._stopping = asyncio.Event()
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("the mini-web stopped while starting")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the ASGI app ----------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").rsplit(":", 1)[0].lower()
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        self.requests.append(
            SeenRequest(host, path, query, time.monotonic(), headers.get("user-agent", ""))
        )
        if host == SEARCH_HOST or host not in self.sites:
            if path == "/search":
                await self._search(parse_qs(query), send)
            else:
                await _send(send, 404, b"not found", TEXT)
            return
        site = self.sites[host]
        if path == "/robots.txt" and "/robots.txt" not in site.pages:
            if site.robots is None:
                await _send(send, 404, b"no robots.txt", TEXT)
            else:
                await _send(send, 200, site.robots.encode(), TEXT)
            return
        served = site.pages.get(path)
        if served is None:
            await _send(send, 404, b"not found", TEXT)
        elif isinstance(served, Page):
            await _send(send, served.status, served.encoded(), served.content_type, served.headers)
        elif isinstance(served, Redirect):
            await _send(send, served.status, b"", TEXT, {"location": served.location})
        elif isinstance(served, SlowPage):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), served.delay)
            if self._stopping.is_set():
                return
            page = served.page
            await _send(send, page.status, page.encoded(), page.content_type, page.headers)
        else:
            await self._large(served, path, receive, send)

    async def _large(self, page: LargePage, path: str, receive: Receive, send: Send) -> None:
        head = f"<html><head><title>{html.escape(page.title)}</title></head><body>".encode()
        paragraph = (
            b"<p>This paragraph repeats to make the page larger than any size limit. "
            b"Readers should only ever see its beginning.</p>\n"
        )
        headers = [(b"content-type", HTML.encode())]
        if page.declare_length:
            headers.append((b"content-length", str(page.size).encode()))
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        sent = 0
        self.large_sent[path] = 0
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            body = head
            while sent < page.size and not gone.is_set() and not self._stopping.is_set():
                while len(body) < page.chunk:
                    body += paragraph
                chunk = body[: min(page.chunk, page.size - sent)]
                body = body[len(chunk) :]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                self.large_sent[path] = sent
                await asyncio.sleep(0)  # lets the watcher see the client go
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away (it cut the page)
            pass
        finally:
            watcher.cancel()
            self.large_done.add(path)

    async def _search(self, params: dict[str, list[str]], send: Send) -> None:
        query = (params.get("q") or [""])[0]
        if (params.get("format") or [""])[0] != "json":
            await _send(send, 403, b"only format=json is enabled", TEXT)
            return
        if not query.strip():
            await _send(send, 400, b"q is required", TEXT)
            return
        self.searches.append(query)
        asked = words(query)
        results: list[dict[str, Any]] = []
        for planted in self._planted:
            if planted.words <= set(asked):
                r = planted.result
                results.append(
                    {"url": r.url, "title": r.title, "content": r.content, "engine": "planted"}
                )
        for score, url, page in self._ranked(asked):
            text = " ".join(page.text().split())
            results.append(
                {
                    "url": url,
                    "title": page.title() or url,
                    "content": text[:240],
                    "engine": "miniweb",
                    "score": score,
                }
            )
        body = {"query": query, "number_of_results": len(results), "results": results}
        await _send(send, 200, json.dumps(body).encode(), "application/json")

    def _ranked(self, asked: list[str]) -> list[tuple[float, str, Page]]:
        wanted = set(asked)
        ranked: list[tuple[float, str, Page]] = []
        for host, site in self.sites.items():
            for path, served in site.pages.items():
                page = served.page if isinstance(served, SlowPage) else served
                if not isinstance(page, Page) or not page.searchable or page.status != 200:
                    continue
                body_words = words(page.text())
                title_words = words(page.title())
                score = sum(1 for w in body_words if w in wanted) + 2 * sum(
                    1 for w in title_words if w in wanted
                )
                if score:
                    ranked.append((float(score), self.url(host, path), page))
        ranked.sort(key=lambda item: (-item[0], item[1]))
        return ranked


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
