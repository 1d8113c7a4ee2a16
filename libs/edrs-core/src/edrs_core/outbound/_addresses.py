"""Which IP addresses outbound requests may reach: anything but public unicast is refused.

The tables are explicit rather than read from `ipaddress`'s `is_private`/`is_global`, whose
answers changed between Python patch releases; `is_global` is still consulted last, as a net.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Refusal:
    """Why an address is refused. `hard` refusals hold even under an operator allow rule."""

    kind: str
    """One word or two: `loopback`, `private`, `link-local`, `metadata`, ..."""
    phrase: str
    """Reads after "is": "a loopback address"."""
    hard: bool = False


# Cloud instance metadata services: they hand out credentials, so no rule ever allows them.
METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task credentials
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)


def _net(cidr: str) -> IpNetwork:
    return ipaddress.ip_network(cidr)


def _r(kind: str, phrase: str, hard: bool = False) -> Refusal:
    return Refusal(kind, phrase, hard)


_NOT_PUBLIC = "not a public address"

# Order matters: the first match names the refusal (255.255.255.255 before 240.0.0.0/4).
_IPV4: tuple[tuple[IpNetwork, Refusal], ...] = (
    (_net("0.0.0.0/32"), _r("unspecified", "an unspecified address", hard=True)),
    # Linux connects 0.0.0.0 (and may route the rest of 0/8) to this machine.
    (_net("0.0.0.0/8"), _r("reserved", "a reserved ('this network') address", hard=True)),
    (_net("127.0.0.0/8"), _r("loopback", "a loopback address")),
    (_net("10.0.0.0/8"), _r("private", "a private address")),
    (_net("172.16.0.0/12"), _r("private", "a private address")),
    (_net("192.168.0.0/16"), _r("private", "a private address")),
    (_net("100.64.0.0/10"), _r("cgnat", f"a shared (carrier-grade NAT) address, {_NOT_PUBLIC}")),
    (_net("169.254.0.0/16"), _r("link-local", "a link-local address")),
    (_net("192.0.0.0/24"), _r("reserved", f"an IETF protocol assignment, {_NOT_PUBLIC}")),
    (_net("192.0.2.0/24"), _r("documentation", f"a documentation address, {_NOT_PUBLIC}")),
    (_net("198.51.100.0/24"), _r("documentation", f"a documentation address, {_NOT_PUBLIC}")),
    (_net("203.0.113.0/24"), _r("documentation", f"a documentation address, {_NOT_PUBLIC}")),
    (_net("198.18.0.0/15"), _r("benchmarking", f"a benchmarking address, {_NOT_PUBLIC}")),
    (_net("192.88.99.0/24"), _r("reserved", f"a 6to4 relay anycast address, {_NOT_PUBLIC}")),
    (_net("224.0.0.0/4"), _r("multicast", "a multicast address", hard=True)),
    (_net("255.255.255.255/32"), _r("broadcast", "the broadcast address", hard=True)),
    (_net("240.0.0.0/4"), _r("reserved", "a reserved address")),
)

_IPV6: tuple[tuple[IpNetwork, Refusal], ...] = (
    (_net("::/128"), _r("unspecified", "an unspecified address", hard=True)),
    (_net("::1/128"), _r("loopback", "a loopback address")),
    (_net("64:ff9b:1::/48"), _r("private", f"a local-use NAT64 address, {_NOT_PUBLIC}")),
    (_net("100::/64"), _r("reserved", f"a discard-only address, {_NOT_PUBLIC}")),
    (_net("2001::/32"), _r("teredo", f"a Teredo tunnel address, {_NOT_PUBLIC}")),
    (_net("2001:db8::/32"), _r("documentation", f"a documentation address, {_NOT_PUBLIC}")),
    (_net("fc00::/7"), _r("private", "a private (unique local) address")),
    (_net("fe80::/10"), _r("link-local", "a link-local address")),
    (_net("fec0::/10"), _r("private", "a private (site-local) address")),
    (_net("ff00::/8"), _r("multicast", "a multicast address", hard=True)),
)

_GLOBAL_UNICAST = _net("2000::/3")
_MAPPED = _net("::ffff:0:0/96")
_TRANSLATED = _net("::ffff:0:0:0/96")
_COMPATIBLE = _net("::/96")
_NAT64 = _net("64:ff9b::/96")
_SIX_TO_FOUR = _net("2002::/16")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries and reaches, with the form's name, if it has one."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _MAPPED:
        return "an IPv4-mapped address", low32
    if ip in _TRANSLATED:
        return "an IPv4-translated address", low32
    if ip in _NAT64:
        return "a NAT64 address", low32
    if ip in _SIX_TO_FOUR:
        return "a 6to4 address", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFF_FFFF)
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not IPv4 carriers
        return "an IPv4-compatible address", low32
    return None


def classify(ip: IpAddress) -> Refusal | None:
    """Why `ip` must not be reached, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    inner = _classify_plain(ip)
    if ip in METADATA_ADDRESSES:
        phrase = (
            f"{inner.phrase}, a cloud metadata service" if inner else "a cloud metadata service"
        )
        return Refusal("metadata", phrase, hard=True)
    return inner


def _classify_plain(ip: IpAddress) -> Refusal | None:
    if isinstance(ip, ipaddress.IPv6Address):
        carried = embedded_ipv4(ip)
        if carried is not None:
            form, v4 = carried
            refusal = classify(v4)
            if refusal is None:
                return None  # the packets go to a public IPv4 address
            return Refusal(refusal.kind, f"{form} of {v4}, {refusal.phrase}", refusal.hard)
    table = _IPV4 if isinstance(ip, ipaddress.IPv4Address) else _IPV6
    for network, refusal in table:
        if ip in network:
            return refusal
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST:
        return Refusal("reserved", "a reserved address")
    if not ip.is_global:
        return Refusal("reserved", _NOT_PUBLIC)
    return None
