"""Rules for connector configuration: which keys hold secrets, and what each kind requires."""

from __future__ import annotations

import re
from collections.abc import Mapping

from edrs_core.errors import InvalidArgument
from edrs_core.outbound import OutboundBlocked, OutboundError, OutboundPolicy

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


def http_url(value: str, field: str, policy: OutboundPolicy) -> str:
    """`value` if `policy` lets the fleet send requests to it, else InvalidArgument naming `field`.

    The policy is the one the outbound client enforces when it calls the URL (edrs_core.outbound):
    http(s) only, no embedded credentials, no host that is or means an internal address unless
    the operator allowed it. Only the text is checked here; the client checks the resolved
    addresses again on every request.
    """
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    try:
        policy.check_url(value)
    except OutboundBlocked as exc:
        message = f"{field} {exc.reason}"
        if exc.rule == "userinfo":
            # They would be stored and shown in clear; secrets belong in a secret-named key.
            message += (
                "; put them in a key such as 'password' or 'api_key', which is stored encrypted"
            )
        raise InvalidArgument(message, field=field) from None
    except OutboundError as exc:
        raise InvalidArgument(f"{field} {exc.reason}", field=field) from None
    return value


def connector_config(
    kind: str, config: Mapping[str, str], outbound: OutboundPolicy, field: str = "config"
) -> dict[str, str]:
    """`config` checked for size, key names and value lengths, and for what `kind` requires; a
    URL it must call is checked against the `outbound` policy."""
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
        http_url(config.get("url", ""), f"{field}[url]", outbound)
    return dict(config)
