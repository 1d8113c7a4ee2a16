"""The web console's files as the gateway serves them at /console: cache headers, the
Content-Security-Policy, the single-page fallback, and a clear answer when it is not built."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from edrs_gateway.console import CONSOLE_CSP, console_app
from starlette.applications import Starlette
from starlette.routing import Mount

INDEX = '<!doctype html><script type="module" src="/console/assets/index-abc123.js"></script>'


def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir(parents=True)
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('console')")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path.parent / "secret.txt").write_text("not for you")
    return tmp_path


def client(folder: Path) -> httpx.AsyncClient:
    app = Starlette(routes=[Mount("/console", app=console_app(folder))])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_hashed_assets_are_immutable_and_the_page_is_revalidated(tmp_path) -> None:
    async with client(built(tmp_path / "dist")) as http:
        asset = await http.get("/console/assets/index-abc123.js")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "javascript" in asset.headers["content-type"]
        page = await http.get("/console/")
        assert page.status_code == 200 and page.text == INDEX
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["content-type"].startswith("text/html")
        other = await http.get("/console/favicon.svg")
        assert other.headers["cache-control"] == "no-cache"


async def test_every_response_carries_the_strict_csp_and_security_headers(tmp_path) -> None:
    async with client(built(tmp_path / "dist")) as http:
        for path in ("/console/", "/console/chat/p/c", "/console/assets/index-abc123.js"):
            reply = await http.get(path)
            assert reply.headers["content-security-policy"] == CONSOLE_CSP, path
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["x-frame-options"] == "DENY"
    directives = dict(d.strip().split(" ", 1) for d in CONSOLE_CSP.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert "unsafe" not in CONSOLE_CSP
    assert directives["connect-src"] == "'self'" and directives["default-src"] == "'none'"


async def test_client_routes_get_the_page_and_missing_assets_stay_404(tmp_path) -> None:
    async with client(built(tmp_path / "dist")) as http:
        for route in ("/console/chat", "/console/relationship/abc", "/console/admin/api-keys"):
            reply = await http.get(route)
            assert reply.status_code == 200 and reply.text == INDEX, route
            assert reply.headers["cache-control"] == "no-cache"
        missing = await http.get("/console/assets/index-old999.js")
        assert missing.status_code == 404
        assert "immutable" not in missing.headers.get("cache-control", "")


@pytest.mark.parametrize("path", ["/console/../secret.txt", "/console/%2e%2e/secret.txt"])
async def test_nothing_outside_the_build_is_served(tmp_path, path) -> None:
    async with client(built(tmp_path / "dist")) as http:
        reply = await http.get(path)
        assert "not for you" not in reply.text


async def test_only_reads_are_allowed(tmp_path) -> None:
    async with client(built(tmp_path / "dist")) as http:
        reply = await http.post("/console/", content=b"x")
        assert reply.status_code == 405
        assert reply.json()["code"] == "method_not_allowed"
        head = await http.head("/console/assets/index-abc123.js")
        assert head.status_code == 200


async def test_an_unbuilt_console_says_how_to_build_it(tmp_path) -> None:
    async with client(tmp_path / "nothing-here") as http:
        reply = await http.get("/console/")
        assert reply.status_code == 404
        assert reply.headers["content-type"] == "application/problem+json"
        assert "make console" in reply.json()["detail"]
