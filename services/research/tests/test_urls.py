"""Source URL normalisation and its SSRF refusals, as pure functions."""

from __future__ import annotations

import pytest
from edrs_core.outbound import OutboundPolicy
from edrs_core.testing_http import INTERNAL_HOST_LITERALS
from edrs_research.urls import MAX_URL_LENGTH, SourceUrl, UrlRefused
from edrs_research.urls import normalise as normalise_under

POLICY = OutboundPolicy()  # no operator exceptions: the public internet only


def normalise(raw: str) -> SourceUrl:
    return normalise_under(raw, POLICY)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://Example.COM/Path", "https://example.com/Path"),
        ("HTTP://example.com", "http://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),
        ("https://example.com/a?b=1&c=2#section", "https://example.com/a?b=1&c=2"),
        ("https://example.com./a", "https://example.com/a"),
        ("https://bücher.de/straße", "https://xn--bcher-kva.de/stra%C3%9Fe"),
        ("https://8.8.8.8/dns", "https://8.8.8.8/dns"),
        ("https://[2001:4860:4860:0:0:0:0:8888]/", "https://[2001:4860:4860::8888]/"),
        ("https://[2001:4860:4860::8888]:8443/", "https://[2001:4860:4860::8888]:8443/"),
        ("https://134744072/", "https://8.8.8.8/"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalise(raw).url == expected


def test_equal_urls_normalise_alike() -> None:
    spellings = [
        "https://EXAMPLE.com/docs?q=1",
        "https://example.com:443/docs?q=1#intro",
        "https://example.com./docs?q=1",
    ]
    assert {normalise(s).url for s in spellings} == {"https://example.com/docs?q=1"}


def test_reports_the_parts_credibility_needs() -> None:
    source = normalise("https://[2001:4860:4860::8888]:8443/x")
    assert (source.scheme, source.host, source.port, source.ip_literal) == (
        "https",
        "2001:4860:4860::8888",
        8443,
        True,
    )
    named = normalise("http://example.org:80/")
    assert (named.host, named.port, named.ip_literal) == ("example.org", None, False)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://example.com/file", "must use http or https, not 'ftp'"),
        ("file:///etc/passwd", "must use http or https, not 'file'"),
        ("javascript:alert(1)", "must use http or https, not 'javascript'"),
        ("example.com/page", "must use http or https, not none"),
        ("https:///path-only", "has no host"),
        ("https://user:secret@example.com/", "must not carry credentials"),
        ("https://user@example.com/", "must not carry credentials"),
        ("https://example.com\\@127.0.0.1/", "must not carry credentials"),
        ("https://exa mple.com/", "must not contain white space"),
        ("https://example.com/\x00", "must not contain white space or control characters"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://example.com:0/", "port 0"),
        ("https://exa_mple!.com/", "is not a valid host name"),
        ("https://a..b.com/", "is not a valid domain name"),
        ("https://[::1/", "is not a valid URL"),
        ("https://localhost/", "points at this machine"),
        ("https://LOCALHOST:8080/", "points at this machine"),
        ("https://api.localhost/", "points at this machine"),
        ("https://localhost./", "points at this machine"),
    ],
)
def test_refuses_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as err:
        normalise(raw)
    assert reason in str(err.value)


@pytest.mark.parametrize(("host", "kind"), INTERNAL_HOST_LITERALS)
def test_refuses_internal_ip_literals(host: str, kind: str) -> None:
    with pytest.raises(UrlRefused) as err:
        normalise(f"http://{host}/")
    assert kind in str(err.value)


def test_refuses_an_ipv6_zone_id() -> None:
    with pytest.raises(UrlRefused, match="zone id"):
        normalise("http://[fe80::1%25eth0]/")


def test_refuses_a_url_too_long_once_normalised() -> None:
    # Each non-ASCII character becomes a six-character percent escape.
    with pytest.raises(UrlRefused, match=f"the limit is {MAX_URL_LENGTH}"):
        normalise("https://example.com/" + "é" * 400)


def test_accepts_public_names_that_merely_look_internal() -> None:
    assert normalise("https://localhost.example.com/").host == "localhost.example.com"
    assert normalise("https://10.example.com/").host == "10.example.com"
