"""Rules for connector configuration: which keys hold secrets, and what each kind requires."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from edrs_core.errors import InvalidArgument

MAX_CONFIG_KEYS = 50
MAX_KEY_LENGTH = 100
MAX_VALUE_LENGTH = 4_096
# Kinds that call out over HTTP, and so need somewhere to call.
KINDS_NEEDING_URL = frozenset({"webhook", "http"})

_KEY = re.compile(r"[A-Za-z0-9_.-]+")
# A key is secret when its name says so anywhere in it: "api_token", "clientSecret",
# "X-Api-Key", "db.password", "credentials_file".
_SECRET_KEY = re.compile(r"secret|token|password|api[_-]?key|credential", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def http_url(value: str, field: str) -> str:
    """`value` if it is an absolute http(s) URL with a host and no embedded credentials."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if any(c.isspace() for c in value):
        raise InvalidArgument(f"{field} must not contain white space", field=field)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid URL: {exc}", field=field) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidArgument(
            f"{field} must be an http:// or https:// URL, got scheme {parts.scheme or 'none'!r}",
            field=field,
        )
    if not parts.hostname:
        raise InvalidArgument(f"{field} must name a host", field=field)
    if parts.username is not None or parts.password is not None:
        # They would be stored and shown in clear; secrets belong in a secret-named key.
        raise InvalidArgument(
            f"{field} must not embed credentials; put them in a key such as 'password' or "
            "'api_key', which is stored encrypted",
            field=field,
        )
    return value


def connector_config(kind: str, config: Mapping[str, str], field: str = "config") -> dict[str, str]:
    """`config` checked for size, key names and value lengths, and for what `kind` requires."""
    if len(config) > MAX_CONFIG_KEYS:
        raise InvalidArgument(
            f"{field} has {len(config)} keys; the limit is {MAX_CONFIG_KEYS}", field=field
        )
    for key, value in config.items():
        if not key or len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
            raise InvalidArgument(
                f"{field} key {key!r} must be 1..{MAX_KEY_LENGTH} characters of letters, digits, "
                "'_', '-' and '.'",
                field=field,
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidArgument(
                f"{field}[{key}] is {len(value)} characters long; the limit is {MAX_VALUE_LENGTH}",
                field=f"{field}[{key}]",
            )
    if kind in KINDS_NEEDING_URL:
        http_url(config.get("url", ""), f"{field}[url]")
    return dict(config)
