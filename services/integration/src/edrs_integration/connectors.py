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
AUTH_TYPES = ("none", "api_key", "bearer", "oauth2_client_credentials")
# The secret each REST auth type needs.
AUTH_SECRET = {
    "api_key": "api_key",
    "bearer": "token",
    "oauth2_client_credentials": "client_secret",
}
SMTP_SECURITY = ("starttls", "tls", "none")
INBOUND_SCHEMES = ("standard", "github", "stripe")

_KEY = re.compile(r"[A-Za-z0-9_.-]+")
# A key is secret when its name says so anywhere in it: "api_token", "clientSecret",
# "X-Api-Key", "db.password", "credentials_file".
_SECRET_KEY = re.compile(r"secret|token|password|api[_-]?key|credential", re.IGNORECASE)


# Where a secret-sounding key names a place, not a secret: the token endpoint, the header an API
# key goes in.
_NOT_SECRET_SUFFIX = re.compile(r"[_.-](url|header)$", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None and _NOT_SECRET_SUFFIX.search(key) is None


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


def kind_settings(
    kind: str,
    config: Mapping[str, str],
    secret_keys: frozenset[str] | set[str],
    outbound: OutboundPolicy,
    field: str = "config",
) -> None:
    """What a connector of `kind` needs, checked on its whole settings (plain `config` and the
    names of its secrets), at creation and after every update."""
    auth = config.get("auth", "none")
    if kind == "http":
        if auth not in AUTH_TYPES:
            raise InvalidArgument(
                f"{field}[auth] must be one of {', '.join(AUTH_TYPES)}, not {auth!r}",
                field=f"{field}[auth]",
            )
        needed = AUTH_SECRET.get(auth)
        if needed is not None and needed not in secret_keys:
            raise InvalidArgument(
                f"{field}[{needed}] is required with auth {auth}", field=f"{field}[{needed}]"
            )
        if auth == "oauth2_client_credentials":
            http_url(config.get("token_url", ""), f"{field}[token_url]", outbound)
            if not config.get("client_id"):
                raise InvalidArgument(
                    f"{field}[client_id] is required with auth {auth}", field=f"{field}[client_id]"
                )
    if kind == "smtp":
        if not config.get("host"):
            raise InvalidArgument(f"{field}[host] is required", field=f"{field}[host]")
        try:
            outbound.check_url(f"http://{config['host']}/")
        except OutboundError as exc:
            raise InvalidArgument(f"{field}[host] {exc.reason}", field=f"{field}[host]") from None
        port = config.get("port", "587")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"{field}[port] must be 1..65535", field=f"{field}[port]")
        security = config.get("security", "starttls")
        if security not in SMTP_SECURITY:
            raise InvalidArgument(
                f"{field}[security] must be one of {', '.join(SMTP_SECURITY)}",
                field=f"{field}[security]",
            )
        if "@" not in config.get("from_address", ""):
            raise InvalidArgument(
                f"{field}[from_address] must be an email address", field=f"{field}[from_address]"
            )
        if config.get("username") and "password" not in secret_keys:
            raise InvalidArgument(
                f"{field}[password] is required with a username", field=f"{field}[password]"
            )
    scheme = config.get("inbound_scheme")
    if scheme is not None and scheme not in INBOUND_SCHEMES:
        raise InvalidArgument(
            f"{field}[inbound_scheme] must be one of {', '.join(INBOUND_SCHEMES)}",
            field=f"{field}[inbound_scheme]",
        )
