"""Serves the console's built files: hashed assets cached for a year, `index.html` revalidated
on every load, every client route (`/console/chat/...`) answered with `index.html` so a deep
link or a reload works, and a Content-Security-Policy that lets the page run only its own
scripts and talk only to this origin."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.edge.security import SecurityHeadersMiddleware

CONSOLE_PATH = "/console"

# No inline script or style element, no eval, nothing from another origin. `style-src 'self'`
# still lets scripts set element.style (the virtual list positions rows that way): CSP governs
# style attributes in markup and <style> elements, not the CSSOM. `connect-src 'self'` covers the
# REST and SSE calls; a WebSocket to the same origin is `'self'` too in CSP Level 3.
CONSOLE_CSP = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self' data:; "
    "font-src 'self'; "
    "connect-src 'self'; "
    "manifest-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# Vite names every file under assets/ by its content hash: a new build is a new name.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
INDEX = "index.html"


def default_console_dir() -> Path:
    """Where `make console` builds to: `console_dist` inside this package (see console/vite.config.ts)."""
    return Path(str(files("edrs_gateway") / "console_dist"))


class ConsoleFiles(StaticFiles):
    """StaticFiles (which refuses paths outside its folder) with the console's cache policy and
    the single-page fallback: a path that names no file and is not under assets/ gets
    `index.html`; a missing asset stays a 404, since an HTML page in its place would only
    confuse the browser."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or path.startswith("assets" + os.sep) or path == "assets":
                raise
            response = await super().get_response(INDEX, scope)
            path = INDEX
        if response.status_code < 400:
            immutable = path.startswith("assets" + os.sep)
            response.headers["Cache-Control"] = IMMUTABLE if immutable else REVALIDATE
        response.headers["Content-Security-Policy"] = CONSOLE_CSP
        return response


def console_app(directory: Path | None = None) -> ASGIApp:
    """The ASGI app mounted at /console, wrapped in the gateway's security headers (which keep
    the console's own CSP). When the console was not built, every path answers a 404 problem
    saying how to build it, rather than an empty page."""
    folder = directory or default_console_dir()
    files_app = ConsoleFiles(folder)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise HTTPException(404)
        if not (folder / INDEX).is_file():
            await problem_response(
                404,
                "not_found",
                f"the web console is not built in {folder}: run `make console`",
                title="Not found",
                instance=scope.get("root_path", "") + scope["path"],
            )(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await problem_response(
                405, "method_not_allowed", "the console's files are read with GET",
                title="Method not allowed", instance=scope["path"],
            )(scope, receive, send)  # fmt: skip
            return
        await files_app(scope, receive, send)

    return SecurityHeadersMiddleware(app)
