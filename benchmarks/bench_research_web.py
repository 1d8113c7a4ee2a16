"""Research web benchmark: pages fetched and extracted per second from the mini-web.

Run `python benchmarks/bench_research_web.py [--pages 200] [--hosts 8] [--concurrency 8]`. It
serves a mini-web on loopback (edrs_research.miniweb: several sites chosen by Host header, each
with robots.txt) and fetches every page through the research Fetcher exactly as the service does
(SSRF-safe outbound client with the resolve setting, robots.txt, the per-host rate limit set to 0
here, the size cut, trafilatura extraction, language detection), then measures:

- fetch + extract: pages/s and MB/s of HTML over all pages, p50/p95 of one page;
- extract only: the same pages' HTML through the extraction alone (the CPU part), pages/s;
- the cut: one page of 256 MiB, cut at the 5 MiB default limit (time, and the peak of the Python
  heap while reading it: the page is never held whole);
- near-duplicates: the Deduper over every page's text, pages/s.

It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import tracemalloc

from _harness import percentiles
from edrs_research.config import ResearchSettings
from edrs_research.miniweb import LargePage, MiniWeb, Page, Site
from edrs_research.web.dedupe import Deduper
from edrs_research.web.fetch import Fetcher, _read_html

WORDS = [
    "moon",
    "orbit",
    "earth",
    "tide",
    "eclipse",
    "crater",
    "apollo",
    "lunar",
    "distance",
    "gravity",
    "sunlight",
    "phase",
    "month",
    "astronomer",
    "telescope",
    "surface",
    "mission",
    "sample",
    "rock",
    "dust",
    "ice",
    "water",
    "pole",
    "basin",
    "mare",
    "highland",
]


def article(rng: random.Random, i: int, paragraphs: int) -> str:
    body = "".join(
        "<p>" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))) + ".</p>\n"
        for _ in range(paragraphs)
    )
    return (
        f"<!doctype html><html lang='en'><head><title>Article {i}</title>"
        f"<meta name='author' content='Author {i % 17}'>"
        f"<meta property='article:published_time' content='2025-0{1 + i % 9}-1{i % 10}'>"
        "</head><body><nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
        f"<article><h1>Article {i}</h1>{body}</article>"
        "<footer>Copyright the mini-web</footer></body></html>"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rng = random.Random(13)
    hosts = [f"site{h}.miniweb.test" for h in range(args.hosts)]
    pages: dict[str, dict[str, Page]] = {h: {} for h in hosts}
    urls: list[tuple[str, str]] = []
    for i in range(args.pages):
        host = hosts[i % len(hosts)]
        pages[host][f"/a{i}"] = Page(article(rng, i, rng.choice((4, 12, 40))))
        urls.append((host, f"/a{i}"))
    sites = [Site(h, pages=pages[h], robots="User-agent: *\nDisallow: /private/\n") for h in hosts]
    sites.append(Site("big.miniweb.test", pages={"/huge": LargePage(256 * 1024 * 1024)}))
    html_bytes = sum(len(p.encoded()) for site in pages.values() for p in site.values())

    async with MiniWeb(sites) as web:
        settings = ResearchSettings(
            database_url="postgresql://unused/unused",
            environment="development",
            outbound_allow=("*.miniweb.test",),
            outbound_resolve=tuple(web.resolve_entries()),
            fetch_host_interval_seconds=0.0,
        )
        async with settings.outbound_client(user_agent=settings.fetch_user_agent) as client:
            fetcher = Fetcher(client, settings.fetch_limits(), tiers=settings.domain_tiers())
            slots = asyncio.Semaphore(args.concurrency)
            latencies: list[float] = []
            texts: list[str] = []

            async def one(host: str, path: str) -> None:
                async with slots:
                    started = time.perf_counter()
                    page = await fetcher.fetch(web.url(host, path))
                    latencies.append(time.perf_counter() - started)
                    texts.append(page.text)

            # Warm-up (imports, the language model): one page, not counted.
            await fetcher.fetch(web.url(*urls[0]))
            started = time.perf_counter()
            await asyncio.gather(*(one(h, p) for h, p in urls))
            elapsed = time.perf_counter() - started
            cuts = percentiles(latencies)
            print(
                f"fetch+extract: {len(urls)} pages ({html_bytes / 1e6:.1f} MB of HTML) on "
                f"{len(hosts)} hosts, concurrency {args.concurrency}: "
                f"{len(urls) / elapsed:.1f} pages/s, {html_bytes / 1e6 / elapsed:.2f} MB/s, "
                f"one page p50 {cuts['p50']:.0f} ms p95 {cuts['p95']:.0f} ms"
            )
            robots = sum(1 for r in web.requests if r.path == "/robots.txt")
            print(f"  requests the mini-web saw: {len(web.requests)} ({robots} robots.txt)")
            pages_per_host = len(urls) / len(hosts)
            print(
                f"  at the default 1 s per host: at most {len(hosts)} pages/s over {len(hosts)} hosts ({pages_per_host:.0f} pages each)"
            )

            markup = [
                (web.url(h, p), pages[h][p].encoded().decode())
                for h, p in urls[: min(50, len(urls))]
            ]
            started = time.perf_counter()
            for url, html in markup:
                _read_html(html, url)
            elapsed = time.perf_counter() - started
            print(f"extract only: {len(markup) / elapsed:.1f} pages/s ({len(markup)} pages)")

            tracemalloc.start()
            started = time.perf_counter()
            cut = await fetcher.fetch(web.url("big.miniweb.test", "/huge"))
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"cut: a 256 MiB page read up to {settings.fetch_max_bytes / 2**20:.0f} MiB "
                f"(truncated={cut.truncated}) in {elapsed:.2f} s, Python heap peak "
                f"{peak / 2**20:.1f} MiB (tracemalloc slows extraction)"
            )

    deduper = Deduper()
    started = time.perf_counter()
    duplicates = sum(1 for i, text in enumerate(texts) if deduper.seen(text, key=str(i)))
    elapsed = time.perf_counter() - started
    print(
        f"near-duplicates: {len(texts)} pages in {elapsed * 1000:.0f} ms "
        f"({len(texts) / elapsed:.0f} pages/s), {duplicates} duplicates"
    )


if __name__ == "__main__":
    asyncio.run(main())
