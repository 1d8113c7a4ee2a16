"""Parsing an outbound URL into one canonical form, so every later check sees what will be used.

Attackers rely on two parsers disagreeing about a URL's host (the checker's and the HTTP
client's). Here the URL is parsed once, its host normalised (IDNA with UTS #46 mapping, every
IPv4 spelling read as the address it is), the URL rebuilt from the parts, and the HTTP client's
own reading of the rebuilt URL compared with ours.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import idna

from edrs_core.outbound._addresses import IpAddress
from edrs_core.outbound._errors import OutboundBlocked, OutboundInvalidUrl

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_HOST_LENGTH = 253

# One DNS label after IDNA encoding: letters, digits, hyphens inside, at most 63. Underscores occur
# in real DNS names (service records, some CDNs), so they are let through.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# A last label that is a number makes the whole host an IPv4 address to a URL parser (WHATWG);
# one that inet_aton rejects (1.2.3.999) must not be handed to a resolver as a name.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
# Characters outside ASCII, percent-encoded so the URL sent is plain ASCII however it was typed.
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Scripts whose letters are confusable with each other; one label mixing them is a homograph.
_CONFUSABLE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


@dataclass(frozen=True, kw_only=True)
class OutboundUrl:
    """A URL in canonical form: lower-case scheme, IDNA (A-label) or canonical IP host, no
    userinfo, no default port, "/" for an empty path, non-ASCII percent-encoded, no fragment."""

    url: str
    scheme: str
    host: str
    """A-label host name, or the canonical IP address (IPv6 without brackets)."""
    port: int
    """The port connected to (the scheme's default when the URL names none)."""
    ip: IpAddress | None
    """The address, when the host is an IP literal."""

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def explicit_port(self) -> int | None:
        """The port when it is not the scheme's default."""
        return None if self.port == DEFAULT_PORTS[self.scheme] else self.port


def parse_url(raw: str) -> OutboundUrl:
    """`raw` in canonical form, or OutboundInvalidUrl/OutboundBlocked for its syntax.

    Only the text is judged here (scheme, userinfo, host syntax); which hosts and addresses may be
    reached is the policy's decision.
    """
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in raw):
        raise OutboundInvalidUrl("must not contain white space or control characters")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise OutboundInvalidUrl(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = f"{scheme!r}" if scheme else "none"
        raise OutboundBlocked(f"must use http or https, not {shown}", rule="scheme")
    # Any "@" in the authority is refused, not only a well-formed userinfo: parsers disagree on
    # which "@" ends it ("http://a\@b", "http://a@b@c"), which is how checks get bypassed.
    if "@" in parts.netloc:
        raise OutboundBlocked("must not carry credentials (user:password@)", rule="userinfo")
    if not parts.hostname:
        raise OutboundInvalidUrl("has no host")
    if port == 0:
        raise OutboundInvalidUrl("port 0 is not a port a server listens on")
    host, ip = normalise_host(parts.hostname)
    port = port or DEFAULT_PORTS[scheme]
    netloc = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else host
    if port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = _NON_ASCII.sub(lambda m: quote(m.group()), parts.path) or "/"
    query = _NON_ASCII.sub(lambda m: quote(m.group()), parts.query)
    url = urlunsplit((scheme, netloc, path, query, ""))
    _same_reading(url, host, port)
    return OutboundUrl(url=url, scheme=scheme, host=host, port=port, ip=ip)


def normalise_host(hostname: str) -> tuple[str, IpAddress | None]:
    """The canonical host (A-label name or IP address) and its address when it is an IP literal.

    `hostname` is a URL's host without brackets. Raises OutboundInvalidUrl for a malformed host and
    OutboundBlocked (`homograph`) for a label mixing Latin, Cyrillic and Greek letters.
    """
    if ":" in hostname:  # only a bracketed IPv6 literal can hold a colon here
        if "%" in hostname:
            raise OutboundInvalidUrl(f"host [{hostname}] must not carry an IPv6 zone id")
        try:
            ip6 = ipaddress.IPv6Address(hostname)
        except ValueError:
            raise OutboundInvalidUrl(f"host [{hostname}] is not a valid IPv6 address") from None
        return ip6.compressed, ip6
    if "%" in hostname:
        raise OutboundInvalidUrl(f"host {hostname!r} must not be percent-encoded")
    name = _idna(hostname)
    # HTTP clients hand the host to inet_aton, which also reads "127.1", "2130706433" and
    # "0x7f.0.0.1" as IPv4 addresses; read them the same way so none slips through as a name.
    try:
        packed = socket.inet_aton(name)
    except OSError:
        if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
            raise OutboundInvalidUrl(f"host {name} is not a valid IPv4 address") from None
        return name, None
    ip4 = ipaddress.IPv4Address(packed)
    return str(ip4), ip4


def normalise_name(pattern: str) -> str:
    """A host name (or a rule's name part) in the A-label form hosts are compared in."""
    return _idna(pattern)


def _idna(hostname: str) -> str:
    """`hostname` mapped by UTS #46 (full-width letters, "。", case, soft hyphens) and encoded
    label by label to ASCII, so that a deny list sees the name the resolver will be asked for."""
    try:
        mapped = idna.uts46_remap(hostname, std3_rules=False, transitional=False)
    except idna.IDNAError:
        raise OutboundInvalidUrl(f"host {hostname!r} is not a valid domain name") from None
    mapped = mapped.removesuffix(".")
    labels = mapped.split(".")
    if not all(labels):
        raise OutboundInvalidUrl(f"host {hostname!r} is not a valid domain name")
    encoded = []
    for label in labels:
        if label.isascii():
            unicode_form = label
            if label.startswith("xn--"):
                try:
                    unicode_form = idna.ulabel(label)
                except (idna.IDNAError, UnicodeError):
                    raise OutboundInvalidUrl(
                        f"host {hostname!r} is not a valid domain name"
                    ) from None
            ascii_form = label
        else:
            unicode_form = label
            try:
                ascii_form = idna.alabel(label).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                raise OutboundInvalidUrl(f"host {hostname!r} is not a valid domain name") from None
        _refuse_mixed_scripts(hostname, unicode_form)
        if not _LABEL.match(ascii_form):
            raise OutboundInvalidUrl(f"host {hostname!r} is not a valid host name")
        encoded.append(ascii_form)
    name = ".".join(encoded)
    if len(name) > MAX_HOST_LENGTH:
        raise OutboundInvalidUrl(f"host is {len(name)} characters long; the limit is 253")
    return name


def _refuse_mixed_scripts(hostname: str, label: str) -> None:
    if label.isascii():
        return
    scripts = {
        script
        for ch in label
        if ch.isalpha()
        for script in _CONFUSABLE_SCRIPTS
        if unicodedata.name(ch, "").startswith(script + " ")
    }
    if len(scripts) > 1:
        mixed = " and ".join(s.title() for s in sorted(scripts))
        raise OutboundBlocked(
            f"host {hostname!r} mixes {mixed} letters in one label (a homograph)",
            rule="homograph",
        )


def _same_reading(url: str, host: str, port: int) -> None:
    """OutboundInvalidUrl unless httpx reads the rebuilt URL's host and port as we do."""
    try:
        theirs = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundInvalidUrl(f"is not a valid URL ({exc})") from None
    if (
        theirs.raw_host.decode("ascii") != host
        or (theirs.port or DEFAULT_PORTS[theirs.scheme]) != port
    ):
        raise OutboundInvalidUrl("is read differently by the HTTP client; refused to be safe")
