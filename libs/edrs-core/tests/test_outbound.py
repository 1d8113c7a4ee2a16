"""The outbound client against real sockets on loopback: every attack URL is refused before a
connection is made to it, and allowed "public-style" hosts (loopback under an explicit operator
rule) work end to end, with the size cut and the time limits observable.

Proof of "no connection": the loopback servers count the TCP connections they accept, and an
audit hook records every `socket.connect` the process makes while an attack runs (which also
covers targets no test server can listen on, such as 10.0.0.1 or 169.254.169.254).
"""

# Look-alike characters (full-width, Cyrillic) are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
from edrs_core.outbound import (
    HostRules,
    IpAddress,
    OutboundBlocked,
    OutboundClient,
    OutboundConnectionError,
    OutboundError,
    OutboundInvalidUrl,
    OutboundLimits,
    OutboundPolicy,
    OutboundResponseTooLarge,
    OutboundTimeout,
    OutboundTlsError,
    OutboundTooManyRedirects,
)
from edrs_core.testing import wait_until
from edrs_core.testing_http import (
    LoopbackHttpServer,
    RecordedRequest,
    Responder,
    drip,
    held,
    large_body,
    redirect,
    respond,
    self_signed_tls,
)

PUBLIC_IP = "127.0.0.2"  # the "public internet" of these tests, opened by an operator rule
POLICY_ALLOW = [f"{PUBLIC_IP}/32"]

# --- every socket.connect of the process, while recording -------------------------------------

_recording: list[list[tuple[str, int]]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "socket.connect" and _recording:
        address = args[1]
        if isinstance(address, tuple):
            _recording[-1].append((str(address[0]), int(address[1])))


sys.addaudithook(_audit)


@contextlib.contextmanager
def recorded_connects() -> Iterator[list[tuple[str, int]]]:
    connects: list[tuple[str, int]] = []
    _recording.append(connects)
    try:
        yield connects
    finally:
        _recording.remove(connects)


# --- a resolver the test controls -------------------------------------------------------------


@dataclass
class ScriptedResolver:
    """Answers from a script: each name has a list of answers, one per call (the last repeats)."""

    answers: dict[str, list[list[str]]]
    calls: list[str] = field(default_factory=list)
    hang: set[str] = field(default_factory=set)

    async def __call__(self, host: str, port: int) -> Sequence[IpAddress]:
        self.calls.append(host)
        if host in self.hang:
            await asyncio.Event().wait()
        script = self.answers.get(host)
        if script is None:
            raise OutboundConnectionError(f"host {host} could not be resolved (no such name)")
        n = sum(1 for c in self.calls if c == host) - 1
        return [ipaddress.ip_address(a) for a in script[min(n, len(script) - 1)]]


def scripted_resolver() -> ScriptedResolver:
    return ScriptedResolver(
        {
            "www.public.test": [[PUBLIC_IP]],
            "other.public.test": [[PUBLIC_IP]],
            "secure.public.test": [[PUBLIC_IP]],
            "wrong-cert.public.test": [[PUBLIC_IP]],
            "rebind.evil.test": [["127.0.0.1"]],
            "mixed.evil.test": [[PUBLIC_IP, "127.0.0.1"]],
            "v6.evil.test": [["::1"]],
            "mapped.evil.test": [["::ffff:127.0.0.1"]],
            "127.0.0.1.nip.io": [["127.0.0.1"]],
            "meta.evil.test": [["169.254.169.254"]],
            "flip.public.test": [[PUBLIC_IP], ["127.0.0.1"]],
            "wiki.corp.test": [["127.0.0.3"]],
        },
        hang={"slow-dns.public.test"},
    )


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Servers:
    lo4: LoopbackHttpServer  # 127.0.0.1: what attacks aim at
    lo6: LoopbackHttpServer  # ::1
    public: LoopbackHttpServer  # 127.0.0.2, same port as lo4: allowed

    @property
    def p(self) -> int:
        return self.lo4.port

    def forbidden_connections(self) -> int:
        return self.lo4.connections + self.lo6.connections


async def _redirect_303(request: RecordedRequest, out: Responder) -> None:
    await out.send(303, b"", {"Location": request.query("to") or "/"})


async def _echo(request: RecordedRequest, out: Responder) -> None:
    await out.send(200, f"{request.method} {len(request.body)}".encode())


def _gzip_body(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=9)


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[Servers]:
    lo4 = await LoopbackHttpServer("127.0.0.1").start()
    lo4.routes["/"] = respond(200, b"secret from 127.0.0.1")
    lo6: LoopbackHttpServer | None = None
    # The allowed server listens on the same port at another loopback address, so a connection
    # that re-resolved "flip.public.test" after the check would land on lo4 and be counted.
    public = await LoopbackHttpServer(PUBLIC_IP, lo4.port).start()
    try:
        lo6 = await LoopbackHttpServer("::1", lo4.port).start()
    except OSError:  # the port is taken on ::1 (or IPv6 is off: then the audit hook is the proof)
        with contextlib.suppress(OSError):
            lo6 = await LoopbackHttpServer("::1").start()
        if lo6 is None:
            lo6 = LoopbackHttpServer("::1", lo4.port)  # not listening: counts nothing
    lo6.routes["/"] = respond(200, b"secret from ::1")
    big = 50 * 1024 * 1024
    public.routes.update(
        {
            "/ok": respond(200, b"public ok", {"Content-Type": "text/plain; charset=utf-8"}),
            "/redirect": redirect(),
            "/redirect307": redirect(status=307),
            "/redirect303": _redirect_303,
            "/loop": redirect("/loop"),
            "/echo": _echo,
            "/big-declared": large_body(big),
            "/big-stream": large_body(big, declare_length=False),
            "/gzip-bomb": respond(
                200, _gzip_body(b"\0" * (20 * 1024 * 1024)), {"Content-Encoding": "gzip"}
            ),
            "/gzip-small": respond(200, _gzip_body(b"hello " * 1000), {"Content-Encoding": "gzip"}),
            "/held": held(),
            "/drip": drip(0.05),
        }
    )
    yield Servers(lo4, lo6, public)
    for server in (lo4, lo6, public):
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(
        OutboundPolicy(allow=POLICY_ALLOW),
        OutboundLimits(max_response_bytes=256 * 1024, timeout_seconds=30.0),
        resolver=scripted_resolver(),
    ) as c:
        yield c


# --- the attack table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    id: str
    url: str
    """Template: {p} the IPv4 servers' port, {p6} the ::1 server's, {public} the allowed base."""
    error: type[OutboundError]
    reason: str
    rules: HostRules | None = None
    redirect_from_public: bool = False
    """The first hop is the allowed server (its connection is expected), the redirect is not."""


def _via(target: str, route: str = "/redirect") -> str:
    # Braces stay unquoted: they are the template's placeholders, filled in by the test.
    return "{public}" + route + "?to=" + quote(target, safe="{}")


DENY_WWW = HostRules.parse(deny=["www.public.test", "bücher.public.test"])
ALLOW_PAYPAL = HostRules.parse(allow=["www.paypal.test"])
B, INV = OutboundBlocked, OutboundInvalidUrl
LOOPBACK = "is a loopback address"

ATTACKS = [
    # IPv4 literals in every spelling inet_aton reads
    Attack("dotted", "http://127.0.0.1:{p}/", B, "host 127.0.0.1 " + LOOPBACK),
    Attack("decimal", "http://2130706433:{p}/", B, LOOPBACK),
    Attack("hex-whole", "http://0x7f000001:{p}/", B, LOOPBACK),
    Attack("hex-octet", "http://0x7f.0.0.1:{p}/", B, LOOPBACK),
    Attack("hex-short", "http://0x7f.1:{p}/", B, LOOPBACK),
    Attack("octal", "http://0177.0.0.1:{p}/", B, LOOPBACK),
    Attack("octal-whole", "http://017700000001:{p}/", B, LOOPBACK),
    Attack("short", "http://127.1:{p}/", B, LOOPBACK),
    Attack("short-3", "http://127.0.1:{p}/", B, LOOPBACK),
    Attack("trailing-dot", "http://127.0.0.1.:{p}/", B, LOOPBACK),
    Attack("zero", "http://0:{p}/", B, "is an unspecified address"),
    Attack("unspecified", "http://0.0.0.0:{p}/", B, "is an unspecified address"),
    # IPv6
    Attack("v6-unspecified", "http://[::]:{p6}/", B, "is an unspecified address"),
    Attack("v6-loopback", "http://[::1]:{p6}/", B, LOOPBACK),
    Attack("v6-loopback-long", "http://[0:0:0:0:0:0:0:1]:{p6}/", B, LOOPBACK),
    Attack("v4-mapped", "http://[::ffff:127.0.0.1]:{p}/", B, "IPv4-mapped address of 127.0.0.1"),
    Attack("v4-mapped-hex", "http://[::ffff:7f00:1]:{p}/", B, "IPv4-mapped address of 127.0.0.1"),
    Attack("v4-compatible", "http://[::127.0.0.1]:{p}/", B, "IPv4-compatible address of 127.0.0.1"),
    Attack("6to4", "http://[2002:7f00:1::]:{p}/", B, "6to4 address of 127.0.0.1"),
    Attack("nat64", "http://[64:ff9b::7f00:1]:{p}/", B, "NAT64 address of 127.0.0.1"),
    Attack("link-local-zone", "http://[fe80::1%25lo]:{p6}/", INV, "must not carry an IPv6 zone id"),
    Attack("loopback-zone", "http://[::1%25lo]:{p6}/", INV, "must not carry an IPv6 zone id"),
    Attack("link-local", "http://[fe80::1]:{p6}/", B, "is a link-local address"),
    # cloud metadata
    Attack("metadata", "http://169.254.169.254/latest/meta-data/", B, "a cloud metadata service"),
    Attack("metadata-decimal", "http://2852039166/latest/", B, "a cloud metadata service"),
    Attack("metadata-ecs", "http://169.254.170.2/v2/credentials", B, "a cloud metadata service"),
    Attack("metadata-v6", "http://[fd00:ec2::254]/latest/", B, "a cloud metadata service"),
    Attack("metadata-mapped", "http://[::ffff:169.254.169.254]/", B, "a cloud metadata service"),
    Attack(
        "metadata-gcp-name",
        "http://metadata.google.internal/computeMetadata/v1/",
        B,
        "is a cloud metadata service",
    ),
    # private and special ranges
    Attack("private-10", "http://10.0.0.1:{p}/", B, "is a private address"),
    Attack("private-172", "http://172.16.0.1/", B, "is a private address"),
    Attack("private-192", "http://192.168.1.1/", B, "is a private address"),
    Attack("cgnat", "http://100.64.0.1/", B, "carrier-grade NAT"),
    Attack("multicast", "http://224.0.0.1/", B, "is a multicast address"),
    Attack("broadcast", "http://255.255.255.255/", B, "is the broadcast address"),
    Attack("reserved", "http://240.0.0.1/", B, "is a reserved address"),
    Attack("v6-unique-local", "http://[fc00::1]/", B, "private (unique local)"),
    # names that mean this machine or a private network
    Attack("localhost", "http://localhost:{p}/", B, "points at this machine"),
    Attack("localhost-case-dot", "http://LOCALHOST.:{p}/", B, "points at this machine"),
    Attack("localhost-sub", "http://api.localhost:{p}/", B, "points at this machine"),
    Attack("single-label", "http://edrs-gateway:{p}/", B, "single-label name"),
    Attack("private-suffix", "http://db.cluster.local:{p}/", B, "private networks only"),
    # IDN spellings of the same hosts
    Attack("fullwidth-localhost", "http://ｌｏｃａｌｈｏｓｔ:{p}/", B, "points at this machine"),
    Attack("fullwidth-digits", "http://１２７.０.０.１:{p}/", B, LOOPBACK),
    Attack("ideographic-dots", "http://127。0。0。1:{p}/", B, LOOPBACK),
    # userinfo and parser-confusion tricks
    Attack("userinfo", "http://evil@127.0.0.1:{p}/", B, "must not carry credentials"),
    Attack(
        "userinfo-allowed-name",
        "http://www.public.test@127.0.0.1:{p}/",
        B,
        "must not carry credentials",
    ),
    Attack("fragment-at", "http://127.0.0.1:{p}#@www.public.test/", B, LOOPBACK),
    Attack(
        "backslash-at", "http://www.public.test\\@127.0.0.1:{p}/", B, "must not carry credentials"
    ),
    Attack("double-at", "http://a@www.public.test@127.0.0.1:{p}/", B, "must not carry credentials"),
    Attack("percent-host", "http://%31%32%37.0.0.1:{p}/", INV, "must not be percent-encoded"),
    Attack("percent-dots", "http://127%2e0%2e0%2e1:{p}/", INV, "must not be percent-encoded"),
    Attack("invalid-ipv4", "http://127.0.0.256:{p}/", INV, "is not a valid IPv4 address"),
    # other schemes
    Attack("ftp", "ftp://127.0.0.1:{p}/", B, "must use http or https, not 'ftp'"),
    Attack("file", "file:///etc/passwd", B, "must use http or https, not 'file'"),
    Attack("gopher", "gopher://127.0.0.1:{p}/_GET", B, "not 'gopher'"),
    Attack("dict", "dict://127.0.0.1:{p}/info", B, "not 'dict'"),
    # names whose DNS answer is internal: refused after resolution, before any connect
    Attack("rebind-name", "http://rebind.evil.test:{p}/", B, "resolves to 127.0.0.1, a loopback"),
    Attack("mixed-answer", "http://mixed.evil.test:{p}/", B, "resolves to 127.0.0.1"),
    Attack("v6-answer", "http://v6.evil.test:{p6}/", B, "resolves to ::1, a loopback"),
    Attack("mapped-answer", "http://mapped.evil.test:{p}/", B, "IPv4-mapped address of 127.0.0.1"),
    Attack("nip-io", "http://127.0.0.1.nip.io:{p}/", B, "resolves to 127.0.0.1"),
    Attack("metadata-answer", "http://meta.evil.test/", B, "resolves to 169.254.169.254"),
    # homographs and tenant lists
    Attack("homograph-mixed", "http://wwԝ.public.test:{p}/", B, "mixes Cyrillic and Latin"),
    Attack(
        "deny-fullwidth", "http://ｗｗｗ.public.test:{p}/ok", B, "in the tenant's deny list", DENY_WWW
    ),
    Attack(
        "deny-soft-hyphen",
        "http://ww\u00adw.public.test:{p}/ok",
        B,
        "in the tenant's deny list",
        DENY_WWW,
    ),
    Attack(
        "deny-case-dot", "http://WWW.Public.Test.:{p}/ok", B, "in the tenant's deny list", DENY_WWW
    ),
    Attack(
        "deny-punycode",
        "http://xn--bcher-kva.public.test:{p}/ok",
        B,
        "in the tenant's deny list",
        DENY_WWW,
    ),
    Attack(
        "allow-whole-script-cyrillic",
        "http://www.раураӏ.test:{p}/",
        B,
        "not in the tenant's allow list",
        ALLOW_PAYPAL,
    ),
    # redirects from the allowed server: each location checked again
    Attack("redirect-loopback", _via("http://127.0.0.1:{p}/"), B, "redirect 1 location host 127.0.0.1", redirect_from_public=True),
    Attack("redirect-decimal", _via("http://2130706433:{p}/"), B, LOOPBACK, redirect_from_public=True),
    Attack("redirect-mapped", _via("http://[::ffff:127.0.0.1]:{p}/"), B, "IPv4-mapped", redirect_from_public=True),
    Attack("redirect-v6", _via("http://[::1]:{p6}/"), B, LOOPBACK, redirect_from_public=True),
    Attack("redirect-metadata", _via("http://169.254.169.254/latest/meta-data/"), B, "cloud metadata", redirect_from_public=True),
    Attack("redirect-private-307", _via("http://10.0.0.1/", "/redirect307"), B, "private address", redirect_from_public=True),
    Attack("redirect-rebind-name", _via("http://rebind.evil.test:{p}/"), B, "redirect 1 location host rebind.evil.test resolves to 127.0.0.1", redirect_from_public=True),
    Attack("redirect-localhost", _via("http://localhost:{p}/"), B, "points at this machine", redirect_from_public=True),
    Attack("redirect-scheme-relative", _via("//127.0.0.1:{p}/"), B, LOOPBACK, redirect_from_public=True),
    Attack("redirect-userinfo", _via("http://www.public.test@127.0.0.1:{p}/"), B, "must not carry credentials", redirect_from_public=True),
    Attack("redirect-ftp", _via("ftp://127.0.0.1:{p}/"), B, "redirect 1 location must use http or https, not 'ftp'", redirect_from_public=True),
    Attack("redirect-file", _via("file:///etc/passwd"), B, "not 'file'", redirect_from_public=True),
    Attack("redirect-gopher", _via("gopher://127.0.0.1:{p}/_GET"), B, "not 'gopher'", redirect_from_public=True),
    Attack("redirect-tenant-deny", _via("http://www.public.test:{p}/ok"), B, "redirect 1 location host www.public.test is in the tenant's deny list", HostRules.parse(deny=["www.public.test"]), redirect_from_public=True),
    Attack(
        "redirect-second-hop",
        _via("{public}" + "/redirect?to=" + quote("http://127.0.0.1:{p}/", safe="{}")),
        B,
        "redirect 2 location host 127.0.0.1 " + LOOPBACK,
        redirect_from_public=True,
    ),
]  # fmt: skip


def test_the_table_has_at_least_40_attacks() -> None:
    assert len(ATTACKS) >= 40
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_is_refused_before_a_connection_is_made(
    attack: Attack, servers: Servers, client: OutboundClient
) -> None:
    public_base = f"http://{PUBLIC_IP}:{servers.p}"
    url = attack.url.replace("{public}", public_base).format(p=servers.p, p6=servers.lo6.port)
    forbidden_before = servers.forbidden_connections()
    public_before = servers.public.connections

    with recorded_connects() as connects, pytest.raises(attack.error) as refused:
        await client.get(url, host_rules=attack.rules)

    assert attack.reason in str(refused.value)
    assert servers.forbidden_connections() == forbidden_before
    if attack.redirect_from_public:
        # Only the allowed first hop (and, for the two-hop case, the allowed second) connected.
        assert connects, "the allowed first hop must have connected"
        assert set(connects) == {(PUBLIC_IP, servers.p)}
        assert servers.public.connections - public_before == len(connects)
    else:
        assert connects == []
        assert servers.public.connections == public_before


# --- allowed hosts work end to end ------------------------------------------------------------


async def test_a_public_style_host_under_an_operator_rule_is_served(
    servers: Servers, client: OutboundClient
) -> None:
    with recorded_connects() as connects:
        response = await client.get(f"http://www.public.test:{servers.p}/ok")
    assert (response.status, response.body, response.text()) == (200, b"public ok", "public ok")
    assert connects == [(PUBLIC_IP, servers.p)]
    seen = servers.public.requests[-1]
    assert seen.headers["host"] == f"www.public.test:{servers.p}"  # the name, not the address


async def test_a_redirect_chain_that_stays_allowed_is_followed(
    servers: Servers, client: OutboundClient
) -> None:
    final = f"http://other.public.test:{servers.p}/ok"
    second = f"http://www.public.test:{servers.p}/redirect?to={quote(final, safe='')}"
    first = f"http://{PUBLIC_IP}:{servers.p}/redirect?to={quote(second, safe='')}"
    response = await client.get(first)
    assert (response.status, response.body) == (200, b"public ok")
    assert response.url == final
    assert response.redirects == (first, second)
    assert servers.public.requests[-1].headers["host"] == f"other.public.test:{servers.p}"


async def test_an_operator_name_rule_opens_that_name_only(servers: Servers) -> None:
    async with LoopbackHttpServer("127.0.0.3", servers.p) as wiki:
        wiki.routes["/ok"] = respond(200, b"wiki")
        policy = OutboundPolicy(allow=["*.corp.test"])
        async with OutboundClient(policy, resolver=scripted_resolver()) as c:
            assert (await c.get(f"http://wiki.corp.test:{servers.p}/ok")).body == b"wiki"
            # The rule is for the name: the same address by literal stays refused.
            with pytest.raises(OutboundBlocked, match=r"127\.0\.0\.3 is a loopback address"):
                await c.get(f"http://127.0.0.3:{servers.p}/ok")
        assert wiki.connections == 1


async def test_a_tenant_allow_list_admits_its_hosts_only(
    servers: Servers, client: OutboundClient
) -> None:
    rules = HostRules.parse(allow=["*.public.test"])
    response = await client.get(f"http://www.public.test:{servers.p}/ok", host_rules=rules)
    assert response.status == 200
    with pytest.raises(OutboundBlocked, match="not in the tenant's allow list") as refused:
        await client.get(f"http://{PUBLIC_IP}:{servers.p}/ok", host_rules=rules)
    assert refused.value.rule == "tenant_allow"


async def test_a_tenant_allow_list_never_opens_an_internal_address(
    servers: Servers, client: OutboundClient
) -> None:
    rules = HostRules.parse(allow=["127.0.0.1", "localhost"])
    before = servers.forbidden_connections()
    with pytest.raises(OutboundBlocked, match=LOOPBACK):
        await client.get(f"http://127.0.0.1:{servers.p}/", host_rules=rules)
    with pytest.raises(OutboundBlocked, match="points at this machine"):
        await client.get(f"http://localhost:{servers.p}/", host_rules=rules)
    assert servers.forbidden_connections() == before


# --- DNS rebinding: resolved once, checked, pinned ---------------------------------------------


async def test_an_answer_that_flips_after_the_check_never_reaches_the_new_address(
    servers: Servers,
) -> None:
    resolver = scripted_resolver()
    forbidden_before = servers.forbidden_connections()
    async with OutboundClient(OutboundPolicy(allow=POLICY_ALLOW), resolver=resolver) as c:
        url = f"http://flip.public.test:{servers.p}/ok"
        # Validation at registration time resolves nothing, so it cannot be the "check" that a
        # later lookup contradicts.
        c.policy.check_url(url)
        assert resolver.calls == []
        with recorded_connects() as connects:
            response = await c.get(url)
        # One lookup, checked, and the socket went to the checked address: were the name looked
        # up again for the connect, the second answer (127.0.0.1) would have reached lo4.
        assert resolver.calls == ["flip.public.test"]
        assert connects == [(PUBLIC_IP, servers.p)]
        assert response.body == b"public ok"
        # The next connection looks it up again, sees 127.0.0.1, and is refused before connecting.
        with recorded_connects() as connects, pytest.raises(OutboundBlocked) as refused:
            await c.get(url)
        assert "flip.public.test resolves to 127.0.0.1, a loopback address" in str(refused.value)
        assert connects == []
    assert servers.forbidden_connections() == forbidden_before


# --- TLS keeps the name while the socket is pinned ---------------------------------------------


async def test_tls_verifies_the_name_and_sends_it_as_sni_and_host(servers: Servers) -> None:
    server_tls, client_tls = self_signed_tls(["secure.public.test"])
    async with LoopbackHttpServer(PUBLIC_IP, ssl_context=server_tls) as tls:
        tls.routes["/ok"] = respond(200, b"over tls")
        tls.routes["/redirect"] = redirect()
        async with OutboundClient(
            OutboundPolicy(allow=POLICY_ALLOW), resolver=scripted_resolver(), ssl_context=client_tls
        ) as c:
            with recorded_connects() as connects:
                response = await c.get(f"https://secure.public.test:{tls.port}/ok")
            assert response.body == b"over tls"
            assert connects == [(PUBLIC_IP, tls.port)]  # pinned to the address...
            assert tls.sni_names[-1] == "secure.public.test"  # ...while TLS sees the name
            assert tls.requests[-1].headers["host"] == f"secure.public.test:{tls.port}"

            # A certificate for another name fails verification: the address is not trusted.
            with pytest.raises(OutboundTlsError, match="TLS handshake"):
                await c.get(f"https://wrong-cert.public.test:{tls.port}/ok")

            # https -> http is refused, even to an allowed host.
            target = quote(f"http://www.public.test:{servers.p}/ok", safe="")
            with pytest.raises(OutboundBlocked, match="downgrades https to http") as refused:
                await c.get(f"https://secure.public.test:{tls.port}/redirect?to={target}")
            assert refused.value.redirect == 1


# --- limits -----------------------------------------------------------------------------------


async def test_too_many_redirects(servers: Servers) -> None:
    async with OutboundClient(
        OutboundPolicy(allow=POLICY_ALLOW), OutboundLimits(max_redirects=3)
    ) as c:
        before = len(servers.public.requests)
        with pytest.raises(OutboundTooManyRedirects, match="more than 3 times") as err:
            await c.get(f"http://{PUBLIC_IP}:{servers.p}/loop")
        assert err.value.limit == 3
        assert len(servers.public.requests) - before == 4  # the request and three redirects


async def test_redirects_are_returned_when_not_followed(
    servers: Servers, client: OutboundClient
) -> None:
    response = await client.get(
        f"http://{PUBLIC_IP}:{servers.p}/redirect?to=/ok", follow_redirects=False
    )
    assert (response.status, response.headers["location"]) == (302, "/ok")


async def test_a_declared_oversized_body_is_refused_before_it_is_read(
    servers: Servers, client: OutboundClient
) -> None:
    with pytest.raises(OutboundResponseTooLarge) as err:
        await client.get(f"http://{PUBLIC_IP}:{servers.p}/big-declared")
    assert (err.value.declared, err.value.received) == (50 * 1024 * 1024, 0)
    assert "the limit is 262144 bytes" in str(err.value)


async def test_a_head_answer_declaring_a_large_body_is_not_refused(
    servers: Servers, client: OutboundClient
) -> None:
    response = await client.request("HEAD", f"http://{PUBLIC_IP}:{servers.p}/big-declared")
    assert (response.status, response.body) == (200, b"")
    assert response.headers["content-length"] == str(50 * 1024 * 1024)


async def test_a_streamed_oversized_body_is_cut_at_the_limit(
    servers: Servers, client: OutboundClient
) -> None:
    limit = client.limits.max_response_bytes
    with pytest.raises(OutboundResponseTooLarge) as err:
        await client.get(f"http://{PUBLIC_IP}:{servers.p}/big-stream")
    assert limit < err.value.received <= limit + 64 * 1024
    # The server sees the client hang up long before its 50 MiB are out: never loaded whole.
    served = servers.public.requests[-1]
    await wait_until(_flag(served), within=10.0, what="the server to see the client leave")
    assert served.sent < 50 * 1024 * 1024


async def test_truncate_returns_the_body_cut_at_the_limit(
    servers: Servers, client: OutboundClient
) -> None:
    response = await client.get(f"http://{PUBLIC_IP}:{servers.p}/big-stream", truncate=True)
    assert response.truncated
    assert len(response.body) == client.limits.max_response_bytes
    assert set(response.body) == {ord("a")}


async def test_a_decompression_bomb_is_cut_at_the_limit_after_decoding(
    servers: Servers, client: OutboundClient
) -> None:
    limit = client.limits.max_response_bytes
    with pytest.raises(OutboundResponseTooLarge) as err:
        await client.get(f"http://{PUBLIC_IP}:{servers.p}/gzip-bomb")
    assert err.value.received == limit + 1  # decoding stopped one byte past the limit
    small = await client.get(f"http://{PUBLIC_IP}:{servers.p}/gzip-small")
    assert small.body == b"hello " * 1000


async def test_the_total_time_limit_stops_a_stalled_response(servers: Servers) -> None:
    async with OutboundClient(
        OutboundPolicy(allow=POLICY_ALLOW), OutboundLimits(timeout_seconds=0.5)
    ) as c:
        with pytest.raises(OutboundTimeout, match=r"total time limit of 0\.5 s") as err:
            await c.get(f"http://{PUBLIC_IP}:{servers.p}/held")
        assert (err.value.phase, err.value.limit) == ("total", 0.5)


async def test_the_total_time_limit_stops_a_body_that_drips_forever(servers: Servers) -> None:
    async with OutboundClient(
        OutboundPolicy(allow=POLICY_ALLOW), OutboundLimits(timeout_seconds=0.5)
    ) as c:
        with pytest.raises(OutboundTimeout) as err:
            await c.get(f"http://{PUBLIC_IP}:{servers.p}/drip")
        assert err.value.phase == "total"
    served = servers.public.requests[-1]
    await wait_until(_flag(served), within=10.0, what="the server to see the client leave")
    assert served.sent > 0  # bytes did arrive: each read was in time, the whole was not


async def test_the_connect_limit_bounds_a_resolver_that_never_answers() -> None:
    async with OutboundClient(
        OutboundPolicy(allow=POLICY_ALLOW),
        OutboundLimits(connect_timeout_seconds=0.3),
        resolver=scripted_resolver(),
    ) as c:
        with pytest.raises(OutboundTimeout) as err:
            await c.get("http://slow-dns.public.test/")
        assert (err.value.phase, err.value.limit) == ("connect", 0.3)


# --- connections are pooled -------------------------------------------------------------------


async def test_a_connection_is_reused_after_answers_with_and_without_a_body() -> None:
    """A 204 (bodiless by its framing) hands its connection back to the pool as a 200 does: a
    webhook receiver that answers 204 is not dialled anew for every delivery."""
    accepted = 0

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if head.split(b" ")[1] == b"/empty":
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its pooled connection
        finally:
            writer.close()

    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with OutboundClient(OutboundPolicy(allow=["127.0.0.1"])) as c:
            answers = [
                await c.post(f"http://127.0.0.1:{port}/{path}", content=b"{}")
                for path in ("empty", "empty", "body", "empty", "body")
            ]
    finally:
        server.close()
        await server.wait_closed()
    assert [(a.status, a.body) for a in answers] == [
        (204, b""),
        (204, b""),
        (200, b"ok"),
        (204, b""),
        (200, b"ok"),
    ]
    assert accepted == 1


# --- failures are typed -----------------------------------------------------------------------


async def test_an_unknown_name_and_a_closed_port_are_connection_errors(
    client: OutboundClient,
) -> None:
    with pytest.raises(OutboundConnectionError, match="could not be resolved"):
        await client.get("http://nowhere.public.test/")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind((PUBLIC_IP, 0))
        closed = probe.getsockname()[1]
    with pytest.raises(OutboundConnectionError, match="could not be connected to") as err:
        await client.get(f"http://{PUBLIC_IP}:{closed}/")
    assert not isinstance(err.value, OutboundTlsError)


# --- what a redirect carries ------------------------------------------------------------------


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
    servers: Servers, client: OutboundClient
) -> None:
    secret_headers = {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y", "Accept": "text/plain"}
    same = f"http://{PUBLIC_IP}:{servers.p}/redirect?to=/echo"
    await client.get(same, headers=secret_headers)
    kept = servers.public.requests[-1].headers
    assert (kept["authorization"], kept["x-api-key"]) == ("Bearer s3cr3t", "k3y")

    other = quote(f"http://other.public.test:{servers.p}/echo", safe="")
    await client.get(f"http://{PUBLIC_IP}:{servers.p}/redirect?to={other}", headers=secret_headers)
    moved = servers.public.requests[-1].headers
    assert "authorization" not in moved and "x-api-key" not in moved
    assert moved["accept"] == "text/plain"


async def test_303_turns_a_post_into_a_get_and_307_keeps_it(
    servers: Servers, client: OutboundClient
) -> None:
    base = f"http://{PUBLIC_IP}:{servers.p}"
    after_303 = await client.post(f"{base}/redirect303?to=/echo", content=b"payload")
    assert after_303.body == b"GET 0"
    after_307 = await client.post(f"{base}/redirect307?to=/echo", content=b"payload")
    assert after_307.body == b"POST 7"


async def test_the_transport_checks_every_hop_inside_a_plain_httpx_client(
    servers: Servers, client: OutboundClient
) -> None:
    before = servers.forbidden_connections()
    async with httpx.AsyncClient(transport=client.transport, follow_redirects=True) as plain:
        ok = await plain.get(f"http://www.public.test:{servers.p}/ok")
        assert ok.text == "public ok"
        target = quote(f"http://127.0.0.1:{servers.p}/", safe="")
        with pytest.raises(OutboundBlocked, match=LOOPBACK):
            await plain.get(f"http://{PUBLIC_IP}:{servers.p}/redirect?to={target}")
        with pytest.raises(OutboundBlocked, match=LOOPBACK):
            await plain.get(f"http://127.1:{servers.p}/")
    assert servers.forbidden_connections() == before


def _flag(request: RecordedRequest):  # type: ignore[no-untyped-def]
    async def gone() -> bool:
        return request.client_gone

    return gone


async def test_a_refusal_is_logged_with_its_rule_and_without_the_path_or_query(
    servers: Servers, client: OutboundClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="edrs.outbound")
    with pytest.raises(OutboundBlocked):
        await client.get(f"http://user:pw@127.0.0.1:{servers.p}/hook?token=t0ps3cret")
    with pytest.raises(OutboundBlocked):
        await client.get(f"http://127.0.0.1:{servers.p}/hook?token=t0ps3cret")
    lines = [r.getMessage() for r in caplog.records if r.name == "edrs.outbound"]
    assert lines == [
        "outbound request refused (userinfo): url must not carry credentials (user:password@)",
        "outbound request refused (address): url host 127.0.0.1 is a loopback address",
    ]
    assert not any("t0ps3cret" in line or ":pw@" in line for line in lines)
