"""Source URLs: the canonical form under which a source is registered (so that equal URLs
compare equal), with the fleet's outbound policy deciding which URLs may be registered at all.

The SSRF checks are `edrs_core.outbound`'s, the same the fetcher will apply when it requests the
URL: here on the URL's text only (no name is resolved at registration), there again on the very
addresses it connects to.
"""

from __future__ import annotations

from dataclasses import dataclass

from edrs_core.outbound import OutboundError, OutboundPolicy

MAX_URL_LENGTH = 2_048


class UrlRefused(ValueError):
    """The URL cannot be registered; the message says why and reads after the word "url"."""


@dataclass(frozen=True, kw_only=True)
class SourceUrl:
    """A normalised, registrable URL and the parts credibility scoring looks at."""

    url: str
    scheme: str
    host: str
    port: int | None
    """The port, when it is not the scheme's default (which is dropped from `url`)."""
    ip_literal: bool


def normalise(raw: str, policy: OutboundPolicy) -> SourceUrl:
    """`raw` as a normalised http(s) URL that `policy` lets us fetch, or UrlRefused saying why.

    Normalisation (the outbound policy's canonical form): lower-case scheme and host, IDNA
    (punycode) host, no trailing dot on the host, IPv4 literals in dotted-quad form, no default
    port, "/" for an empty path, non-ASCII characters percent-encoded, no fragment.
    """
    try:
        checked = policy.check_url(raw)
    except OutboundError as exc:
        raise UrlRefused(exc.reason) from None
    if len(checked.url) > MAX_URL_LENGTH:
        raise UrlRefused(
            f"is {len(checked.url)} characters long once normalised; the limit is {MAX_URL_LENGTH}"
        )
    return SourceUrl(
        url=checked.url,
        scheme=checked.scheme,
        host=checked.host,
        port=checked.explicit_port,
        ip_literal=checked.ip is not None,
    )
