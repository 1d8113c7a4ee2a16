"""The rules for an MCP server's credentials (docs/integration.md, "MCP servers"): headers an HTTP
server gets on every request, variables a stdio server's process gets in its environment.

Messages name the offending header or variable, never a value."""

from __future__ import annotations

import re
from collections.abc import Mapping

from edrs_core import InvalidArgument
from mcp.client.stdio import DEFAULT_INHERITED_ENV_VARS

MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 8_192
MAX_ENV = 50
MAX_ENV_VALUE_CHARS = 32_768
MAX_NAME_CHARS = 100

# RFC 7230 section 3.2.6: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 7230 field-value without obs-fold: visible ASCII, space and tab (no CR, LF or NUL).
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")

# Headers a credential must not set (lower case): hop-by-hop ones (RFC 7230 section 6.1, RFC 2616
# section 13.5.1), framing and routing ones the HTTP client owns, and those the MCP transport sets.
_REFUSED_HEADERS = {
    "connection": "a hop-by-hop header",
    "keep-alive": "a hop-by-hop header",
    "proxy-authenticate": "a hop-by-hop header",
    "proxy-authorization": "a hop-by-hop header",
    "proxy-connection": "a hop-by-hop header",
    "te": "a hop-by-hop header",
    "trailer": "a hop-by-hop header",
    "trailers": "a hop-by-hop header",
    "transfer-encoding": "a hop-by-hop header",
    "upgrade": "a hop-by-hop header",
    "host": "set by the HTTP client from the server's URL",
    "content-length": "set by the HTTP client for each request",
    "content-type": "set by the MCP transport",
    "accept": "set by the MCP transport",
    "mcp-session-id": "set by the MCP transport",
    "mcp-protocol-version": "set by the MCP transport",
    "last-event-id": "set by the MCP transport",
}

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# The minimal environment the service gives every stdio server (the MCP SDK's list), which a
# credential never overrides.
_MINIMAL_ENV = frozenset(DEFAULT_INHERITED_ENV_VARS) | {"PATH", "HOME"}
# Variables that change what a program loads or runs: with them a tenant could make an allowed
# command run code of its choosing on the integration host.
_LOADER_ENV = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "PYTHONUSERBASE",
        "NODE_OPTIONS",
        "NODE_PATH",
        "BASH_ENV",
        "ENV",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "IFS",
    }
)
_LOADER_PREFIXES = ("LD_", "DYLD_")


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers an HTTP MCP server is to get, checked; InvalidArgument naming the first bad one."""
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(
            f"headers has {len(headers)} entries; the limit is {MAX_HEADERS}", field="headers"
        )
    seen: dict[str, str] = {}
    for name in sorted(headers):
        where = f"headers[{name[:MAX_NAME_CHARS]!r}]"
        if not _TOKEN.fullmatch(name) or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(
                f"{where}: a header name is 1..{MAX_NAME_CHARS} characters of an RFC 7230 token "
                "(letters, digits and !#$%&'*+-.^_`|~; no spaces, colons or control characters)",
                field="headers",
            )
        why = _REFUSED_HEADERS.get(name.lower())
        if why is not None:
            raise InvalidArgument(
                f"{where}: {name} is {why}; it cannot be a credential", field="headers"
            )
        if name.lower() in seen:
            raise InvalidArgument(
                f"{where}: header names are case-insensitive, and {seen[name.lower()]!r} "
                "names the same header",
                field="headers",
            )
        seen[name.lower()] = name
        value = headers[name]
        if len(value) > MAX_HEADER_VALUE_CHARS or not _FIELD_VALUE.fullmatch(value):
            raise InvalidArgument(
                f"{where}: the value must be 1..{MAX_HEADER_VALUE_CHARS} characters of visible "
                "ASCII, spaces and tabs, not starting or ending with a space (no CR, LF or NUL)",
                field="headers",
            )
    return dict(headers)


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a stdio MCP server is to get, checked; InvalidArgument naming the first bad
    one."""
    if len(env) > MAX_ENV:
        raise InvalidArgument(f"env has {len(env)} entries; the limit is {MAX_ENV}", field="env")
    for name in sorted(env):
        where = f"env[{name[:MAX_NAME_CHARS]!r}]"
        if not _ENV_NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(
                f"{where}: a variable name is 1..{MAX_NAME_CHARS} characters of A-Z, 0-9 and '_', "
                "not starting with a digit",
                field="env",
            )
        if name in _MINIMAL_ENV:
            allowed = ", ".join(sorted(_MINIMAL_ENV))
            raise InvalidArgument(
                f"{where}: {name} is part of the minimal environment the service sets ({allowed}); "
                "a credential cannot override it",
                field="env",
            )
        if name in _LOADER_ENV or name.startswith(_LOADER_PREFIXES):
            raise InvalidArgument(
                f"{where}: {name} changes what a program loads or runs; it cannot be set",
                field="env",
            )
        value = env[name]
        if len(value) > MAX_ENV_VALUE_CHARS or "\x00" in value:
            raise InvalidArgument(
                f"{where}: the value must be at most {MAX_ENV_VALUE_CHARS} characters without NUL",
                field="env",
            )
    return dict(env)
