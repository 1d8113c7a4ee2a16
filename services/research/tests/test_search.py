"""Search providers: SearxNG against the mini-web's search endpoint; Brave and Tavily against a
loopback server answering with their recorded response shapes, checking what is sent."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from edrs_core.testing_http import LoopbackHttpServer, respond
from edrs_research.config import ResearchSettings
from edrs_research.miniweb import MiniWeb, Page, Site
from edrs_research.web.search import (
    BraveSearch,
    NoSearch,
    SearchFailed,
    SearchHit,
    SearxngSearch,
    TavilySearch,
    static_key,
)

API_HOST = "api.search.miniweb.test"
SECRET = "sk-test-0123456789abcdef"

# Recorded shapes of the providers' answers (trimmed to the fields we read, and some we do not).
BRAVE_ANSWER: dict[str, Any] = {
    "type": "search",
    "query": {"original": "moon orbit", "more_results_available": True},
    "mixed": {"type": "mixed", "main": [{"type": "web", "index": 0, "all": False}]},
    "web": {
        "type": "search",
        "family_friendly": True,
        "results": [
            {
                "title": "The <strong>Moon</strong>&#x27;s orbit",
                "url": "https://example.org/moon",
                "is_source_local": False,
                "description": "The <strong>Moon</strong> orbits the Earth every 27.3 days.",
                "page_age": "2024-03-05T00:00:00",
                "age": "March 5, 2024",
                "language": "en",
                "type": "search_result",
                "subtype": "generic",
                "meta_url": {"scheme": "https", "netloc": "example.org", "path": "> moon"},
            },
            {"title": "no url", "description": "skipped"},
            {
                "title": "Lunar distance",
                "url": "https://example.com/distance",
                "description": "About 384,400 km.",
                "type": "search_result",
            },
        ],
    },
}
TAVILY_ANSWER: dict[str, Any] = {
    "query": "moon orbit",
    "follow_up_questions": None,
    "answer": None,
    "images": [],
    "results": [
        {
            "title": "The Moon's orbit",
            "url": "https://example.org/moon",
            "content": "The Moon orbits the Earth every 27.3 days.",
            "score": 0.98,
            "raw_content": None,
        },
        {
            "title": "Lunar distance",
            "url": "https://example.com/distance",
            "content": "About 384,400 km.",
            "score": 0.71,
            "raw_content": None,
        },
    ],
    "response_time": 1.09,
}


@pytest.fixture
async def api() -> AsyncIterator[LoopbackHttpServer]:
    async with LoopbackHttpServer() as server:
        yield server


def api_settings(server: LoopbackHttpServer) -> ResearchSettings:
    return ResearchSettings(
        database_url="postgresql://unused/unused",
        environment="development",
        outbound_allow=(API_HOST,),
        outbound_resolve=(f"{API_HOST}=127.0.0.1",),
    )


async def test_searxng_ranks_the_miniweb_pages_by_the_query(
    miniweb: MiniWeb, client_for, settings_for
) -> None:
    miniweb.add(
        Site(
            "news.miniweb.test",
            pages={
                "/moon": Page(
                    "<title>Moon orbit</title><p>The Moon orbits the Earth; the orbit takes "
                    "27.3 days.</p>"
                ),
                "/sun": Page("<title>The Sun</title><p>The Sun is a star.</p>"),
            },
        )
    )
    miniweb.add(
        Site(
            "wiki.miniweb.test",
            pages={"/moon": Page("<title>Moon</title><p>A natural satellite.</p>")},
        )
    )
    settings = settings_for(miniweb, search_provider="searxng", search_url=miniweb.search_url)
    provider = settings.search(client_for(settings))
    assert isinstance(provider, SearxngSearch)
    hits = await provider.search("moon orbit", limit=10)
    assert hits[0] == SearchHit(
        url=miniweb.url("news.miniweb.test", "/moon"),
        title="Moon orbit",
        snippet="Moon orbit The Moon orbits the Earth; the orbit takes 27.3 days.",
        rank=1,
    )
    assert [h.url for h in hits] == [
        miniweb.url("news.miniweb.test", "/moon"),
        miniweb.url("wiki.miniweb.test", "/moon"),
    ]
    assert [h.rank for h in hits] == [1, 2]
    assert len(await provider.search("moon", limit=1)) == 1
    assert miniweb.searches == ["moon orbit", "moon"]


async def test_planted_results_come_first(miniweb: MiniWeb, client_for, settings_for) -> None:
    miniweb.add(Site("news.miniweb.test", pages={"/moon": Page("<p>moon facts</p>")}))
    miniweb.plant("http://169.254.169.254/latest/meta-data/", "metadata", when="moon")
    miniweb.plant("http://10.0.0.1/", "intranet", when="sun")
    settings = settings_for(miniweb, search_provider="searxng", search_url=miniweb.search_url)
    hits = await settings.search(client_for(settings)).search("moon", limit=5)
    assert [h.url for h in hits] == [
        "http://169.254.169.254/latest/meta-data/",
        miniweb.url("news.miniweb.test", "/moon"),
    ]


async def test_searxng_failures_are_search_failed(
    miniweb: MiniWeb, client_for, settings_for
) -> None:
    settings = settings_for(miniweb)
    client = client_for(settings)
    with pytest.raises(SearchFailed, match="HTTP status 404"):
        await SearxngSearch(client, miniweb.search_url + "/elsewhere").search("moon", limit=3)
    with pytest.raises(SearchFailed, match=r"could not be reached: url host 127\.0\.0\.1"):
        await SearxngSearch(client, f"http://127.0.0.1:{miniweb.port}").search("moon", limit=3)


async def test_query_and_limit_are_checked(miniweb: MiniWeb, client_for, settings_for) -> None:
    provider = SearxngSearch(client_for(settings_for(miniweb)), miniweb.search_url)
    with pytest.raises(ValueError, match="query must not be empty"):
        await provider.search("   ", limit=3)
    with pytest.raises(ValueError, match=r"limit must be 1\.\.50"):
        await provider.search("moon", limit=0)
    with pytest.raises(ValueError, match="the limit is 500"):
        await provider.search("m" * 501, limit=3)
    assert await NoSearch().search("moon", limit=3) == []


async def test_brave_sends_the_key_in_its_header_and_reads_web_results(
    api: LoopbackHttpServer, client_for
) -> None:
    api.routes["/res/v1/web/search"] = respond(
        200, json.dumps(BRAVE_ANSWER).encode(), {"Content-Type": "application/json"}
    )
    settings = api_settings(api)
    provider = BraveSearch(
        client_for(settings), static_key(SECRET), f"http://{API_HOST}:{api.port}"
    )
    hits = await provider.search("moon  orbit", limit=30)
    [request] = api.requests
    assert request.method == "GET"
    assert request.query("q") == "moon orbit"
    assert request.query("count") == "20"  # Brave's most per request
    assert request.headers["x-subscription-token"] == SECRET
    assert hits == [
        SearchHit(
            "https://example.org/moon",
            "The Moon's orbit",
            "The Moon orbits the Earth every 27.3 days.",
            1,
        ),
        SearchHit("https://example.com/distance", "Lunar distance", "About 384,400 km.", 2),
    ]


async def test_tavily_posts_the_query_with_a_bearer_key(
    api: LoopbackHttpServer, client_for
) -> None:
    api.routes["/search"] = respond(
        200, json.dumps(TAVILY_ANSWER).encode(), {"Content-Type": "application/json"}
    )
    provider = TavilySearch(
        client_for(api_settings(api)), static_key(SECRET), f"http://{API_HOST}:{api.port}"
    )
    hits = await provider.search("moon orbit", limit=1)
    [request] = api.requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert json.loads(request.body) == {
        "query": "moon orbit",
        "max_results": 1,
        "search_depth": "basic",
        "include_answer": False,
        "include_raw_content": False,
    }
    assert hits == [
        SearchHit(
            "https://example.org/moon",
            "The Moon's orbit",
            "The Moon orbits the Earth every 27.3 days.",
            1,
        )
    ]


async def test_a_refused_key_fails_without_showing_the_key(
    api: LoopbackHttpServer, client_for, caplog: pytest.LogCaptureFixture
) -> None:
    api.routes["/search"] = respond(401, b'{"detail": {"error": "Unauthorized"}}')
    api.routes["/res/v1/web/search"] = respond(429, b"{}")
    client = client_for(api_settings(api))
    base = f"http://{API_HOST}:{api.port}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SearchFailed) as tavily:
        await TavilySearch(client, static_key(SECRET), base).search("moon", limit=3)
    with pytest.raises(SearchFailed) as brave:
        await BraveSearch(client, static_key(SECRET), base).search("moon", limit=3)
    assert str(tavily.value) == "search provider tavily answered with HTTP status 401"
    assert str(brave.value) == "search provider brave answered with HTTP status 429"
    assert SECRET not in caplog.text


def test_settings_choose_the_provider_and_refuse_a_missing_setting() -> None:
    base = {"database_url": "postgresql://unused/unused", "environment": "development"}
    with pytest.raises(ValueError, match="EDRS_RESEARCH_SEARCH_URL is required"):
        ResearchSettings(**base, search_provider="searxng")
    with pytest.raises(ValueError, match="EDRS_RESEARCH_SEARCH_API_KEY is required"):
        ResearchSettings(**base, search_provider="brave")
    settings = ResearchSettings(**base, search_provider="tavily", search_api_key=SECRET)
    assert SECRET not in repr(settings)


async def test_the_research_web_kit_shares_one_client(miniweb: MiniWeb, settings_for) -> None:
    from edrs_research.web.kit import ResearchWeb

    miniweb.add(Site("news.miniweb.test", pages={"/moon": Page("<p>the moon and its orbit</p>")}))
    web = ResearchWeb.from_settings(
        settings_for(miniweb, search_provider="searxng", search_url=miniweb.search_url)
    )
    try:
        [hit] = await web.search.search("orbit", limit=5)
        page = await web.fetcher.fetch(hit.url)
        assert page.text == "the moon and its orbit"
        assert web.fetcher.client is web.client
        assert web.tiers.tier_of("www.nasa.gov") is not None
    finally:
        await web.aclose()
