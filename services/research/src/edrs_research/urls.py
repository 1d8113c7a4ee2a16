"""Source URL validation and normalisation, refusing URLs that point inside our own network (SSRF).

These are registration-time checks on the URL text only: no name is resolved here. A public host
name can still resolve to a private address, or start to later (DNS rebinding), so the fetcher
must check again at resolution time, on the very addresses it connects to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

MAX_URL_LENGTH = 2_048
DEFAULT_PORTS = {"http": 80, "https": 443}

# One DNS label of a host name (after IDNA encoding): letters, digits, hyphens inside, at most 63.
# Underscores occur in real DNS names, so they are let through.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# Characters outside ASCII, percent-encoded so equal URLs compare equal however they were typed.
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# NAT64 (RFC 6052): the last 32 bits are the IPv4 address a gateway will translate to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def normalise(raw: str) -> SourceUrl:
    """`raw` as a normalised http(s) URL, or UrlRefused saying what is wrong with it.

    Normalisation: lower-case scheme and host, IDNA (punycode) host, no trailing dot on the host,
    IPv4 literals in dotted-quad form, no default port, "/" for an empty path, non-ASCII
    characters percent-encoded, no fragment.
    """
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in raw):
        raise UrlRefused("must not contain white space or control characters")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = f"{scheme!r}" if scheme else "none"
        raise UrlRefused(f"must use http or https, not {shown}")
    if "@" in parts.netloc:
        raise UrlRefused("must not carry credentials (user:password@)")
    if not parts.hostname:
        raise UrlRefused("has no host")
    if port == 0:
        raise UrlRefused("port 0 is not a port a server listens on")
    host, ip = _host(parts.hostname)
    if port == DEFAULT_PORTS[scheme]:
        port = None
    netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
    if port is not None:
        netloc += f":{port}"
    path = _NON_ASCII.sub(lambda m: quote(m.group()), parts.path) or "/"
    query = _NON_ASCII.sub(lambda m: quote(m.group()), parts.query)
    url = urlunsplit((scheme, netloc, path, query, ""))
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(
            f"is {len(url)} characters long once normalised; the limit is {MAX_URL_LENGTH}"
        )
    return SourceUrl(url=url, scheme=scheme, host=host, port=port, ip_literal=ip is not None)


def _host(hostname: str) -> tuple[str, IpAddress | None]:
    """The normalised host and, when it is an IP literal, its address; refuses internal hosts."""
    if ":" in hostname:  # only a bracketed IPv6 literal can hold a colon here
        if "%" in hostname:
            raise UrlRefused(f"host [{hostname}] must not carry an IPv6 zone id")
        try:
            ip6 = ipaddress.IPv6Address(hostname)
        except ValueError:
            raise UrlRefused(f"host [{hostname}] is not a valid IPv6 address") from None
        _refuse_internal(ip6)
        return ip6.compressed, ip6
    name = hostname.removesuffix(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRefused(f"host {hostname!r} is not a valid domain name") from None
    name = name.lower()
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise UrlRefused(f"host {hostname!r} is not a valid host name")
    if name == "localhost" or name.endswith(".localhost"):
        raise UrlRefused(f"host {name} points at this machine (localhost)")
    # HTTP clients hand the host to inet_aton, which also reads "127.1", "2130706433" and
    # "0x7f.0.0.1" as IPv4 addresses; read them the same way so none slips through as a name.
    try:
        packed = socket.inet_aton(name)
    except OSError:
        return name, None
    ip4 = ipaddress.IPv4Address(packed)
    _refuse_internal(ip4)
    return str(ip4), ip4


def _refuse_internal(ip: IpAddress) -> None:
    """UrlRefused unless `ip` is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if embedded is not None:
            try:
                _refuse_internal(embedded)
            except UrlRefused as exc:
                raise UrlRefused(f"host {ip} embeds an IPv4 address: {exc}") from None
    kinds = [
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),  # before private: Python counts 240.0.0.0/4 as both
        ("private", ip.is_private),
    ]
    for kind, matches in kinds:
        if matches:
            raise UrlRefused(f"host {ip} is a {kind} address")
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        raise UrlRefused(f"host {ip} is not a public address")
