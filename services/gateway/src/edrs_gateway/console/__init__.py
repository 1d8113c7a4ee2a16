"""The web console (`console/` at the repo root, built by Vite) served at /console."""

from edrs_gateway.console.static import CONSOLE_CSP, CONSOLE_PATH, ConsoleFiles, console_app

__all__ = ["CONSOLE_CSP", "CONSOLE_PATH", "ConsoleFiles", "console_app"]
