"""The fetcher against the mini-web on loopback: extraction, every refusal kind, robots.txt, the
size cut, the per-host rate limit and the SSRF table."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import tracemalloc
from datetime import UTC, datetime

import pytest
from edrs_core.outbound import HostRules
from edrs_core.testing import wait_until
from edrs_core.testing_http import SSRF_URLS
from edrs_research.miniweb import TEXT, LargePage, MiniWeb, Page, Redirect, Site, SlowPage
from edrs_research.web.fetch import FETCH_REFUSAL_KINDS, FetchRefused

NEWS = "news.miniweb.test"
WIKI = "wiki.miniweb.test"

ARTICLE = """<!doctype html>
<html lang="en"><head><title>The Moon's orbit - Miniweb News</title>
<meta name="author" content="Jane Roe">
<meta property="article:published_time" content="2024-03-05">
</head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>The Moon's orbit</h1>
<p>The Moon orbits the Earth once every 27.3 days, a period astronomers call the sidereal month.
Its distance from the Earth averages about 384,400 kilometres.</p>
<p>The same side of the Moon always faces the Earth because its rotation is tidally locked. Read
more in the <a href="http://wiki.miniweb.test/moon#orbit">wiki</a> or on
<a href="https://example.org/moon">another site</a>.</p>
</article>
<footer>Copyright Miniweb News</footer></body></html>"""

GERMAN = """<html><head><title>Der Mond</title></head><body><article>
<p>Der Mond umkreist die Erde in ungefähr siebenundzwanzig Tagen. Er ist der einzige natürliche
Satellit der Erde und nach der Sonne das hellste Objekt am Himmel.</p>
<p>Seine Oberfläche ist von Kratern übersät, die durch Einschläge entstanden sind.</p>
</article></body></html>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def refused(fetch_call, kind: str) -> FetchRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(FetchRefused) as err:
        await fetch_call
    assert err.value.kind == kind, err.value
    return err.value


async def test_a_page_is_read_into_its_text_and_metadata(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(Site(NEWS, pages={"/moon": Page(ARTICLE)}))
    page = await fetcher_for(miniweb).fetch(miniweb.url(NEWS, "/moon"))
    assert page.url == page.final_url == miniweb.url(NEWS, "/moon")
    assert page.domain == NEWS
    assert page.title.startswith("The Moon's orbit")
    assert page.author == "Jane Roe"
    assert page.published == datetime(2024, 3, 5, tzinfo=UTC)
    assert page.language == "en"
    assert "27.3 days" in page.text and "tidally locked" in page.text
    assert "Copyright" not in page.text  # boilerplate removed
    assert page.content_hash == hashlib.sha256(page.text.encode()).hexdigest()
    assert page.https is False and page.truncated is False
    assert page.links[-2:] == ("http://wiki.miniweb.test/moon", "https://example.org/moon")
    assert miniweb.url(NEWS, "/about") in page.links


async def test_a_page_without_author_or_date_says_so(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(
        Site(
            NEWS,
            pages={
                "/claim": Page(
                    "<html><head><title>Claims</title></head><body><p>The Moon is made of "
                    "green cheese, says this page, which names nobody and gives no date.</p>"
                    "</body></html>"
                )
            },
        )
    )
    page = await fetcher_for(miniweb).fetch(miniweb.url(NEWS, "/claim"))
    assert (page.author, page.published) == ("", None)
    assert "green cheese" in page.text


async def test_language_and_plain_text_pages(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(
        Site(
            WIKI,
            pages={
                "/mond": Page(GERMAN),
                "/notes.txt": Page(
                    "Notes on the Moon\n\nThe Moon has no atmosphere to speak of, so its sky "
                    "is black even by day.",
                    content_type=TEXT,
                ),
            },
        )
    )
    fetcher = fetcher_for(miniweb)
    german = await fetcher.fetch(miniweb.url(WIKI, "/mond"))
    assert german.language == "de"
    notes = await fetcher.fetch(miniweb.url(WIKI, "/notes.txt"))
    assert notes.title == "Notes on the Moon"
    assert "sky is black" in notes.text
    assert notes.language == "en"
    assert notes.content_type == "text/plain"


async def test_a_redirect_is_followed_and_reported(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(Site(NEWS, pages={"/old": Redirect("/moon"), "/moon": Page(ARTICLE)}))
    page = await fetcher_for(miniweb).fetch(miniweb.url(NEWS, "/old"))
    assert page.url == miniweb.url(NEWS, "/old")
    assert page.final_url == miniweb.url(NEWS, "/moon")


async def test_every_redirect_hop_passes_robots_the_blocked_tier_and_the_hop_limit(
    miniweb: MiniWeb, fetcher_for, tmp_path
) -> None:
    tiers = tmp_path / "tiers.json"
    tiers.write_text('{"blocked": {"domains": ["spam.miniweb.test"]}}')
    miniweb.add(
        Site(
            NEWS,
            pages={
                "/to-private": Redirect(f"http://{WIKI}:{miniweb.port}/private/page"),
                "/to-spam": Redirect(f"http://spam.miniweb.test:{miniweb.port}/"),
                "/loop": Redirect("/loop"),
            },
        )
    )
    miniweb.add(
        Site(
            WIKI,
            pages={"/private/page": Page(ARTICLE)},
            robots="User-agent: *\nDisallow: /private/\n",
        )
    )
    miniweb.add(Site("spam.miniweb.test", pages={"/": Page(ARTICLE)}))
    fetcher = fetcher_for(miniweb, domain_tiers_file=tiers, outbound_max_redirects=3)
    err = await refused(fetcher.fetch(miniweb.url(NEWS, "/to-private")), "robots")
    assert f"host {WIKI}'s robots.txt disallows /private/page" in err.reason
    err = await refused(fetcher.fetch(miniweb.url(NEWS, "/to-spam")), "blocked")
    assert "redirect 1 location host spam.miniweb.test" in err.reason
    err = await refused(fetcher.fetch(miniweb.url(NEWS, "/loop")), "status")
    assert "redirected more than 3 times" in err.reason
    assert len(miniweb.requests_to(NEWS, "/loop")) == 4
    # The disallowed and blocked targets were never requested.
    assert miniweb.requests_to(WIKI, "/private/page") == []
    assert miniweb.requests_to("spam.miniweb.test") == []


async def test_every_refusal_kind(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(
        Site(
            NEWS,
            pages={
                "/missing-here": Page("gone", status=410, content_type=TEXT),
                "/report.pdf": Page(b"%PDF-1.4 ...", content_type="application/pdf"),
                "/blank": Page("<html><head></head><body>  </body></html>"),
                "/slow": SlowPage(120.0, Page(ARTICLE)),
                "/private/notes": Page(ARTICLE),
                "/to-loopback": Redirect(f"http://127.0.0.1:{miniweb.port}/moon"),
            },
            robots="User-agent: *\nDisallow: /private/\n",
        )
    )
    miniweb.add(Site("spam.miniweb.test", pages={"/": Page(ARTICLE)}))
    fetcher = fetcher_for(miniweb, fetch_timeout_seconds=2.0)
    seen: set[str] = set()

    async def expect(url: str, kind: str, **kwargs) -> FetchRefused:  # type: ignore[no-untyped-def]
        err = await refused(fetcher.fetch(url, **kwargs), kind)
        seen.add(kind)
        return err

    err = await expect(miniweb.url(NEWS, "/missing-here"), "status")
    assert "410" in err.reason
    assert (
        "application/pdf" in (await expect(miniweb.url(NEWS, "/report.pdf"), "content_type")).reason
    )
    await expect(miniweb.url(NEWS, "/blank"), "empty")
    await expect(miniweb.url(NEWS, "/slow"), "timeout")
    err = await expect(miniweb.url(NEWS, "/private/notes"), "robots")
    assert "disallows /private/notes" in err.reason
    # The redirect's target is checked like the URL itself: loopback by address stays refused.
    err = await expect(miniweb.url(NEWS, "/to-loopback"), "policy")
    assert "127.0.0.1" in err.reason
    await expect(f"http://127.0.0.1:{miniweb.port}/", "policy")
    await expect(
        miniweb.url("spam.miniweb.test", "/"),
        "blocked",
        host_rules=HostRules.parse(deny=["spam.miniweb.test"]),
    )
    # Mapped to loopback by the resolve setting, but nothing listens on that port.
    await expect(f"http://{NEWS}:{free_port()}/", "connection")
    assert not [r for r in miniweb.requests if r.path in ("/private/notes", "/")]
    assert seen == set(FETCH_REFUSAL_KINDS)


async def test_the_blocked_domain_tier_is_never_fetched(
    miniweb: MiniWeb, fetcher_for, tmp_path
) -> None:
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("blocked:\n  domains: ['*.spam.miniweb.test']\n")
    miniweb.add(Site("www.spam.miniweb.test", pages={"/": Page(ARTICLE)}))
    fetcher = fetcher_for(miniweb, domain_tiers_file=tiers)
    err = await refused(fetcher.fetch(miniweb.url("www.spam.miniweb.test", "/")), "blocked")
    assert "blocked domain tier" in err.reason
    assert miniweb.requests_to("www.spam.miniweb.test") == []


async def test_a_name_resolved_to_loopback_needs_the_operators_allow_rule(
    miniweb: MiniWeb, fetcher_for
) -> None:
    miniweb.add(Site(NEWS, pages={"/moon": Page(ARTICLE)}))
    closed = fetcher_for(miniweb, outbound_allow=())
    err = await refused(closed.fetch(miniweb.url(NEWS, "/moon")), "policy")
    assert "resolves to 127.0.0.1" in err.reason
    assert miniweb.requests == []


async def test_robots_server_error_disallows_and_robots_is_read_once(
    miniweb: MiniWeb, fetcher_for
) -> None:
    miniweb.add(Site(WIKI, pages={"/robots.txt": Page("down", status=503, content_type=TEXT)}))
    miniweb.add(
        Site(
            NEWS,
            pages={"/a": Page(ARTICLE), "/b": Page(ARTICLE)},
            robots="User-agent: *\nAllow: /\n",
        )
    )
    fetcher = fetcher_for(miniweb)
    await refused(fetcher.fetch(miniweb.url(WIKI, "/anything")), "robots")
    await fetcher.fetch(miniweb.url(NEWS, "/a"))
    await fetcher.fetch(miniweb.url(NEWS, "/b"))
    assert len(miniweb.requests_to(NEWS, "/robots.txt")) == 1
    assert miniweb.requests_to(WIKI, "/anything") == []
    agents = {r.user_agent for r in miniweb.requests_to(NEWS)}
    assert agents == {fetcher.limits.user_agent}


async def test_robots_for_our_agent_only(miniweb: MiniWeb, fetcher_for) -> None:
    miniweb.add(
        Site(
            NEWS,
            pages={"/a": Page(ARTICLE)},
            robots="User-agent: OtherBot\nDisallow: /\n\nUser-agent: EDRS-Research\nDisallow: /a\n",
        )
    )
    await refused(fetcher_for(miniweb).fetch(miniweb.url(NEWS, "/a")), "robots")


async def test_a_page_over_the_size_limit_is_cut_not_loaded_whole(
    miniweb: MiniWeb, fetcher_for
) -> None:
    size = 256 * 1024 * 1024
    limit = 1024 * 1024
    miniweb.add(
        Site(
            WIKI,
            pages={
                "/huge": LargePage(size),
                "/huge-unsized": LargePage(size, declare_length=False),
            },
        )
    )
    fetcher = fetcher_for(miniweb, fetch_max_bytes=limit)
    for path in ("/huge", "/huge-unsized"):
        tracemalloc.start()
        try:
            page = await fetcher.fetch(miniweb.url(WIKI, path))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert page.truncated is True
        assert page.title == "A very large page"
        assert "Readers should only ever see its beginning" in page.text
        assert len(page.text) < limit
        # Reading the cut page and extracting its text took a fraction of the whole page's size.
        assert peak < size // 4, f"peak {peak} bytes while reading {path}"

        # The client stopped reading at the limit and went away: the server stopped sending.
        async def ended(path: str = path) -> bool:
            return path in miniweb.large_done

        await wait_until(ended, 60, f"the mini-web to stop sending {path}")
        assert miniweb.large_sent[path] < size // 4


async def test_requests_to_one_host_are_spaced_by_the_rate_limit(
    miniweb: MiniWeb, fetcher_for
) -> None:
    interval = 1.0
    miniweb.add(Site(NEWS, pages={f"/p{i}": Page(ARTICLE) for i in range(3)}))
    miniweb.add(Site(WIKI, pages={"/w": Page(GERMAN)}))
    fetcher = fetcher_for(miniweb, fetch_host_interval_seconds=interval)
    pages = await asyncio.gather(
        *(fetcher.fetch(miniweb.url(NEWS, f"/p{i}")) for i in range(3)),
        fetcher.fetch(miniweb.url(WIKI, "/w")),
    )
    assert len(pages) == 4
    # The server's own clock: robots.txt and three pages, each at least the interval apart
    # (less a margin for the request's travel time on a loaded machine).
    times = sorted(r.at for r in miniweb.requests_to(NEWS))
    first = min(miniweb.requests_to(NEWS), key=lambda r: r.at)
    assert first.path == "/robots.txt"
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= interval * 0.75, gaps


@pytest.mark.parametrize(("url", "words"), SSRF_URLS)
async def test_the_ssrf_table_is_refused_by_policy(
    miniweb: MiniWeb, fetcher_for, url: str, words: str
) -> None:
    err = await refused(fetcher_for(miniweb).fetch(url), "policy")
    assert words in err.reason
    assert miniweb.requests == []


async def test_robots_crawl_delay_spaces_requests_beyond_the_setting(
    miniweb: MiniWeb, fetcher_for
) -> None:
    miniweb.add(
        Site(
            WIKI,
            pages={f"/c{i}": Page(ARTICLE) for i in range(2)},
            robots="User-agent: *\nCrawl-delay: 2\n",
        )
    )
    fetcher = fetcher_for(miniweb, fetch_host_interval_seconds=0.0)
    await asyncio.gather(*(fetcher.fetch(miniweb.url(WIKI, f"/c{i}")) for i in range(2)))
    pages = sorted(
        (r.at for r in miniweb.requests_to(WIKI) if r.path != "/robots.txt"),
    )
    assert len(pages) == 2
    assert pages[1] - pages[0] >= 2 * 0.75


async def test_ssrf_urls_planted_in_search_results_are_refused_and_the_rest_is_read(
    miniweb: MiniWeb, fetcher_for, client_for, settings_for
) -> None:
    from edrs_research.web.search import SearxngSearch

    miniweb.add(Site(NEWS, pages={"/moon": Page(ARTICLE)}))
    for url, _ in SSRF_URLS:
        miniweb.plant(url, "planted", when="moon")
    miniweb.plant(f"http://127.0.0.1:{miniweb.port}/moon", "the mini-web by address", when="moon")
    provider = SearxngSearch(client_for(settings_for(miniweb)), miniweb.search_url)
    hits = await provider.search("moon orbit", limit=50)
    fetcher = fetcher_for(miniweb)
    read, refusals = [], []
    for hit in hits:
        try:
            read.append(await fetcher.fetch(hit.url))
        except FetchRefused as exc:
            refusals.append(exc.kind)
    assert [p.url for p in read] == [miniweb.url(NEWS, "/moon")]
    # The provider drops results that are not http(s) (file://, gopher://); the fetcher refuses
    # every other planted URL.
    web_urls = [u for u, _ in SSRF_URLS if u.startswith(("http://", "https://"))]
    assert len(hits) == len(web_urls) + 2
    assert refusals == ["policy"] * (len(web_urls) + 1)
    # Nothing but the search and the real page (and its robots.txt) reached the mini-web.
    assert {(r.host, r.path) for r in miniweb.requests} == {
        ("search.miniweb.test", "/search"),
        (NEWS, "/robots.txt"),
        (NEWS, "/moon"),
    }
