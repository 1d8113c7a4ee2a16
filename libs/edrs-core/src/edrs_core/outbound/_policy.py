"""The outbound policy: which hosts and addresses a request may reach.

Three layers, each only narrowing the one before, except the operator's allow rules:
1. Built in: public unicast addresses and public names only (`_addresses.classify`, plus
   localhost, metadata and private-use names).
2. The operator's allow rules (settings) open named internal hosts or networks, e.g. an intranet
   wiki or a test server on loopback. Metadata, unspecified, multicast and broadcast addresses stay
   refused whatever the rules say.
3. A tenant's host allow and deny lists (`HostRules`) narrow what that tenant's requests reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edrs_core.outbound._addresses import IpAddress, IpNetwork, classify
from edrs_core.outbound._errors import OutboundBlocked, OutboundError
from edrs_core.outbound._urls import OutboundUrl, normalise_host, parse_url

# Names of metadata services: refused like their addresses, whatever the rules say.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Suffixes that only ever resolve inside a private network (RFC 6761, 6762, 8375, ICANN 2024).
PRIVATE_SUFFIXES = ("localhost", "local", "internal", "localdomain", "home.arpa", "lan")


@dataclass(frozen=True)
class HostPattern:
    """A host name, a `*.suffix` wildcard (subdomains at any depth, not the suffix itself), or an
    IP address or CIDR network."""

    text: str
    name: str | None = None
    wildcard: bool = False
    network: IpNetwork | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """The pattern `text`, or ValueError saying what is wrong with it."""
        raw = text.strip()
        problem = (
            f"{text!r} is not a host name, *.wildcard, IP address or CIDR network "
            "(e.g. wiki.corp.example, *.corp.example, 10.20.0.0/16)"
        )
        if not raw:
            raise ValueError(problem)
        if "/" in raw:
            try:
                return cls(text=raw, network=ipaddress.ip_network(raw, strict=False))
            except ValueError:
                raise ValueError(problem) from None
        wildcard = raw.startswith("*.")
        body = raw[2:] if wildcard else raw.removeprefix("[").removesuffix("]")
        try:
            host, ip = normalise_host(body)
        except OutboundError:
            raise ValueError(problem) from None
        if ip is not None:
            if wildcard:
                raise ValueError(problem)
            return cls(text=raw, network=ipaddress.ip_network(ip))
        return cls(text=raw, name=host, wildcard=wildcard)

    def matches_host(self, host: str, ip: IpAddress | None) -> bool:
        """Whether a URL's canonical host (and its address, when an IP literal) matches."""
        if self.network is not None:
            return ip is not None and ip in self.network
        assert self.name is not None
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name

    def matches_address(self, ip: IpAddress) -> bool:
        return self.network is not None and ip in self.network


def parse_patterns(texts: Iterable[str | HostPattern]) -> tuple[HostPattern, ...]:
    return tuple(t if isinstance(t, HostPattern) else HostPattern.parse(t) for t in texts)


@dataclass(frozen=True)
class HostRules:
    """A tenant's host lists. A host in `deny` is refused; when `allow` is not empty, a host must
    be in it. Compared on the canonical host (IDNA A-labels, canonical IPs), so a full-width or
    soft-hyphenated spelling of a denied name is the denied name. They narrow the policy, never
    widen it: an internal address stays refused even if a tenant allows it."""

    allow: tuple[HostPattern, ...] = ()
    deny: tuple[HostPattern, ...] = ()

    @classmethod
    def parse(cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> HostRules:
        return cls(allow=parse_patterns(allow), deny=parse_patterns(deny))

    def check(self, url: OutboundUrl) -> None:
        if any(p.matches_host(url.host, url.ip) for p in self.deny):
            raise OutboundBlocked(
                f"host {url.host} is in the tenant's deny list", rule="tenant_deny"
            )
        if self.allow and not any(p.matches_host(url.host, url.ip) for p in self.allow):
            raise OutboundBlocked(
                f"host {url.host} is not in the tenant's allow list", rule="tenant_allow"
            )


class OutboundPolicy:
    """What outbound requests may reach; `allow` are the operator's explicit exceptions."""

    def __init__(self, allow: Iterable[str | HostPattern] = ()) -> None:
        self.allow = parse_patterns(allow)

    def __repr__(self) -> str:
        return f"OutboundPolicy(allow={[p.text for p in self.allow]!r})"

    def check_url(self, raw: str, host_rules: HostRules | None = None) -> OutboundUrl:
        """`raw` in canonical form if its text may be requested, else the OutboundError saying why.

        Resolves nothing: a name that resolves to an internal address is refused when it is
        resolved, on the addresses actually connected to (`check_addresses`).
        """
        url = parse_url(raw)
        if url.ip is not None:
            self._check_address(url.host, url.ip, name_allowed=False, literal=True)
        else:
            self._check_name(url.host)
        if host_rules is not None:
            host_rules.check(url)
        return url

    def check_addresses(self, host: str, addresses: Sequence[IpAddress]) -> None:
        """OutboundBlocked unless every address `host` resolved to may be reached.

        One refused address refuses them all: a DNS answer mixing public and internal addresses
        is an attack, not a failover. `host` may be an IP literal, its own single address.
        """
        name_allowed = self._operator_allows_name(host)
        for ip in addresses:
            literal = host == str(ip)
            self._check_address(
                host, ip, name_allowed=name_allowed and not literal, literal=literal
            )

    def _check_address(
        self, host: str, ip: IpAddress, *, name_allowed: bool, literal: bool
    ) -> None:
        refusal = classify(ip)
        if refusal is None:
            return
        if not refusal.hard and (name_allowed or any(p.matches_address(ip) for p in self.allow)):
            return
        if literal:
            reason = f"host {host} is {refusal.phrase}"
        else:
            reason = f"host {host} resolves to {ip}, {refusal.phrase}"
        raise OutboundBlocked(reason, rule="address")

    def _check_name(self, host: str) -> None:
        if host in METADATA_NAMES:
            raise OutboundBlocked(f"host {host} is a cloud metadata service", rule="internal_name")
        if self._operator_allows_name(host):
            return
        if host in LOCALHOST_NAMES or host.endswith(".localhost"):
            raise OutboundBlocked(
                f"host {host} points at this machine (localhost)", rule="internal_name"
            )
        if any(host == s or host.endswith("." + s) for s in PRIVATE_SUFFIXES):
            raise OutboundBlocked(
                f"host {host} is a name for private networks only", rule="internal_name"
            )
        if "." not in host:
            # Search domains turn "db" or "edrs-gateway" into cluster-internal names.
            raise OutboundBlocked(
                f"host {host} is a single-label name, which resolves only inside a network",
                rule="internal_name",
            )

    def _operator_allows_name(self, host: str) -> bool:
        return any(p.name is not None and p.matches_host(host, None) for p in self.allow)
