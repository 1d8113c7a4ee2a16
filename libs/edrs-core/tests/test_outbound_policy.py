"""The outbound policy as pure functions: address classes, operator rules, tenant lists, settings."""

# Look-alike characters (full-width, Cyrillic) are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import ipaddress

import pytest
from edrs_core.outbound import (
    HostPattern,
    HostRules,
    OutboundBlocked,
    OutboundInvalidUrl,
    OutboundPolicy,
    OutboundServiceSettings,
    classify,
    parse_url,
)
from edrs_core.settings import SettingsError, load_settings
from edrs_core.testing import test_issuer
from pydantic_settings import SettingsConfigDict


@pytest.mark.parametrize(
    ("address", "kind", "hard"),
    [
        ("127.0.0.1", "loopback", False),
        ("10.1.2.3", "private", False),
        ("100.64.0.1", "cgnat", False),
        ("169.254.1.1", "link-local", False),
        ("169.254.169.254", "metadata", True),
        ("100.100.100.200", "metadata", True),
        ("fd00:ec2::254", "metadata", True),
        ("0.0.0.0", "unspecified", True),
        ("::", "unspecified", True),
        ("224.0.0.1", "multicast", True),
        ("255.255.255.255", "broadcast", True),
        ("240.0.0.1", "reserved", False),
        ("198.18.0.1", "benchmarking", False),
        ("192.0.2.1", "documentation", False),
        ("2001:db8::1", "documentation", False),
        ("fe80::1", "link-local", False),
        ("ff02::1", "multicast", True),
        ("::ffff:10.0.0.1", "private", False),
        ("::ffff:169.254.169.254", "metadata", True),
        ("::ffff:0:127.0.0.1", "loopback", False),  # IPv4-translated (SIIT)
        ("2001::1", "teredo", False),
        ("4000::1", "reserved", False),  # outside 2000::/3, the global unicast block
    ],
)
def test_internal_addresses_are_classified(address: str, kind: str, hard: bool) -> None:
    refusal = classify(ipaddress.ip_address(address))
    assert refusal is not None
    assert (refusal.kind, refusal.hard) == (kind, hard)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]
)
def test_public_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


def test_canonical_form() -> None:
    url = parse_url("HTTPS://Bücher.DE.:443/straße?q=é#frag")
    assert url.url == "https://xn--bcher-kva.de/stra%C3%9Fe?q=%C3%A9"
    assert (url.host, url.port, url.explicit_port, url.ip) == ("xn--bcher-kva.de", 443, None, None)
    v6 = parse_url("http://[2001:4860:4860:0:0:0:0:8888]:8080")
    assert v6.url == "http://[2001:4860:4860::8888]:8080/"
    assert v6.ip == ipaddress.ip_address("2001:4860:4860::8888")


def test_an_operator_network_rule_opens_literals_and_answers_in_it() -> None:
    policy = OutboundPolicy(allow=["10.20.0.0/16"])
    assert policy.check_url("http://10.20.1.2/x").host == "10.20.1.2"
    policy.check_addresses("svc.example.com", [ipaddress.ip_address("10.20.9.9")])
    with pytest.raises(OutboundBlocked, match=r"10\.21\.0\.1 is a private address"):
        policy.check_url("http://10.21.0.1/")
    with pytest.raises(OutboundBlocked, match=r"resolves to 10\.21\.0\.1"):
        policy.check_addresses("svc.example.com", [ipaddress.ip_address("10.21.0.1")])


def test_an_operator_name_rule_opens_that_name_and_its_subdomains_only() -> None:
    policy = OutboundPolicy(allow=["wiki.internal", "*.corp.example"])
    policy.check_url("http://wiki.internal/")
    policy.check_addresses("wiki.internal", [ipaddress.ip_address("10.0.0.5")])
    policy.check_addresses("a.b.corp.example", [ipaddress.ip_address("192.168.0.5")])
    with pytest.raises(OutboundBlocked, match="private networks only"):
        policy.check_url("http://other.internal/")
    with pytest.raises(OutboundBlocked, match=r"resolves to 10\.0\.0\.5"):
        policy.check_addresses("corp.example", [ipaddress.ip_address("10.0.0.5")])


def test_no_rule_opens_metadata_unspecified_or_multicast() -> None:
    policy = OutboundPolicy(allow=["0.0.0.0/0", "::/0", "metadata.google.internal"])
    for url in ("http://169.254.169.254/", "http://0.0.0.0/", "http://224.0.0.1/", "http://[::]/"):
        with pytest.raises(OutboundBlocked):
            policy.check_url(url)
    with pytest.raises(OutboundBlocked, match="cloud metadata service"):
        policy.check_url("http://metadata.google.internal/")
    with pytest.raises(OutboundBlocked, match="cloud metadata"):
        policy.check_addresses("wiki.corp.example", [ipaddress.ip_address("169.254.169.254")])
    # ...while the rest of 0.0.0.0/0 is open, as that rule says.
    policy.check_url("http://127.0.0.1/")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("wiki.corp.example", "name"),
        ("*.corp.example", "wildcard"),
        ("10.0.0.0/8", "network"),
        ("127.0.0.1", "network"),
        ("[::1]", "network"),
        ("BÜCHER.de", "name"),
    ],
)
def test_host_patterns(text: str, kind: str) -> None:
    pattern = HostPattern.parse(text)
    actual = "network" if pattern.network else "wildcard" if pattern.wildcard else "name"
    assert actual == kind


@pytest.mark.parametrize(
    "text", ["", "exa mple.com", "10.0.0.0/33", "*.10.0.0.1", "a..b", "http://x"]
)
def test_bad_host_patterns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a host name, \*\.wildcard, IP address or CIDR"):
        HostPattern.parse(text)


def test_tenant_rules_compare_canonical_hosts() -> None:
    rules = HostRules.parse(deny=["Evil.Example", "*.tracker.example"], allow=[])
    for raw in ("http://evil.example/", "http://ＥＶＩＬ.example/", "http://ev\u00adil.example./"):
        with pytest.raises(OutboundBlocked) as err:
            rules.check(parse_url(raw))
        assert err.value.rule == "tenant_deny"
    rules.check(parse_url("http://tracker.example/"))  # the wildcard is for subdomains only
    with pytest.raises(OutboundBlocked, match="deny list"):
        rules.check(parse_url("http://a.b.tracker.example/"))


def test_malformed_hosts_are_invalid_not_blocked() -> None:
    for raw in (
        "http://a..b.com/",
        "http://exa_mple!.com/",
        "http://xn--zz.com/",
        "http://1.2.3.999/",
    ):
        with pytest.raises(OutboundInvalidUrl):
            parse_url(raw)


class _Settings(OutboundServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_OUTTEST_")
    service_name = "outtest"
    uses_redis = False


def test_settings_read_the_allow_list_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDRS_OUTTEST_DATABASE_URL", "postgresql://x/y")
    # Outside development a service also needs the fleet's trust settings (edrs_core.identity).
    for name, value in test_issuer().settings("outtest").items():
        monkeypatch.setenv(f"EDRS_OUTTEST_{name.upper()}", str(value))
    monkeypatch.setenv("EDRS_OUTTEST_OUTBOUND_ALLOW", "10.20.0.0/16, wiki.corp.example")
    monkeypatch.setenv("EDRS_OUTTEST_OUTBOUND_MAX_REDIRECTS", "2")
    settings = load_settings(_Settings)
    assert settings.outbound_allow == ("10.20.0.0/16", "wiki.corp.example")
    assert settings.outbound_limits().max_redirects == 2
    settings.outbound_policy().check_url("http://10.20.0.1/")
    monkeypatch.setenv("EDRS_OUTTEST_OUTBOUND_ALLOW", '["127.0.0.1/32"]')
    assert load_settings(_Settings).outbound_allow == ("127.0.0.1/32",)


def test_a_bad_allow_entry_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDRS_OUTTEST_DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("EDRS_OUTTEST_OUTBOUND_ALLOW", "10.20.0.0/16,not a host")
    with pytest.raises(SettingsError, match=r"EDRS_OUTTEST_OUTBOUND_ALLOW: .*'not a host' is not"):
        load_settings(_Settings)
