"""Connector configuration rules, without I/O."""

from __future__ import annotations

import pytest
from edrs_core import InvalidArgument
from edrs_core.outbound import OutboundPolicy
from edrs_integration.connectors import connector_config, http_url, is_secret_key

PUBLIC_ONLY = OutboundPolicy()  # no operator exceptions


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "ApiKey",
        "X-API-KEY",
        "api-key",
        "client_secret",
        "accessToken",
        "PASSWORD",
        "db.password",
        "credentials_file",
        "credential",
    ],
)
def test_secret_looking_keys_are_secret(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["url", "region", "format", "timeout_seconds", "api_version", "token_url", "api_key_header"],
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize("url", ["https://hooks.example.com/x?y=1", "HTTPS://Example.com"])
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert http_url(url, "config[url]", PUBLIC_ONLY) == url


def test_a_loopback_url_is_accepted_only_under_an_operator_rule() -> None:
    url = "http://127.0.0.1:8080/in"
    with pytest.raises(InvalidArgument) as err:
        http_url(url, "config[url]", PUBLIC_ONLY)
    assert err.value.message == "config[url] host 127.0.0.1 is a loopback address"
    assert http_url(url, "config[url]", OutboundPolicy(allow=["127.0.0.1"])) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "config[url] is required"),
        ("ftp://example.com", "config[url] must use http or https, not 'ftp'"),
        ("javascript:alert(1)", "must use http or https, not 'javascript'"),
        ("example.com/path", "must use http or https, not none"),
        ("https://", "config[url] has no host"),
        ("https:///path", "has no host"),
        ("https://exa mple.com", "must not contain white space"),
        ("https://example.com:99999", "is not a valid URL"),
        ("https://user:pw@example.com", "must not carry credentials"),
        ("https://user:pw@example.com", "put them in a key such as 'password'"),
        # The outbound policy's refusals, the same the client applies when it calls the URL.
        ("http://localhost:8080/in", "config[url] host localhost points at this machine"),
        ("http://[::ffff:127.0.0.1]/in", "IPv4-mapped address of 127.0.0.1, a loopback"),
        ("http://2130706433/in", "config[url] host 127.0.0.1 is a loopback address"),
        ("http://10.0.0.8/hook", "host 10.0.0.8 is a private address"),
        ("http://169.254.169.254/latest/", "a cloud metadata service"),
        ("http://metadata.google.internal/", "is a cloud metadata service"),
        ("http://edrs-gateway:8080/api", "is a single-label name"),
        ("http://127.0.0.1#@hooks.example.com/", "host 127.0.0.1 is a loopback address"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        http_url(url, "config[url]", PUBLIC_ONLY)
    assert err.value.field == "config[url]"
    assert reason in err.value.message


def test_webhook_and_http_need_a_url_but_mcp_does_not() -> None:
    for kind in ("webhook", "http"):
        with pytest.raises(InvalidArgument, match=r"config\[url\] is required"):
            connector_config(kind, {}, PUBLIC_ONLY)
    assert connector_config("mcp", {"command": "tools-server"}, PUBLIC_ONLY) == {
        "command": "tools-server"
    }


def test_config_limits() -> None:
    assert len(connector_config("mcp", {f"k{i}": "v" for i in range(50)}, PUBLIC_ONLY)) == 50
    with pytest.raises(InvalidArgument, match="config has 51 keys"):
        connector_config("mcp", {f"k{i}": "v" for i in range(51)}, PUBLIC_ONLY)
    with pytest.raises(InvalidArgument, match="config key ''"):
        connector_config("mcp", {"": "v"}, PUBLIC_ONLY)
    with pytest.raises(InvalidArgument) as err:
        connector_config("mcp", {"k" * 101: "v"}, PUBLIC_ONLY)
    assert err.value.field == "config"
    with pytest.raises(InvalidArgument) as err:
        connector_config("mcp", {"token": "v" * 4_097}, PUBLIC_ONLY)
    assert err.value.field == "config[token]"
