"""Connector configuration rules, without I/O."""

from __future__ import annotations

import pytest
from edrs_core import InvalidArgument
from edrs_integration.connectors import connector_config, http_url, is_secret_key


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


@pytest.mark.parametrize("key", ["url", "region", "format", "timeout_seconds", "api_version"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/x?y=1", "http://127.0.0.1:8080/in", "HTTPS://Example.com"],
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert http_url(url, "config[url]") == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "config[url] is required"),
        ("ftp://example.com", "must be an http:// or https:// URL"),
        ("javascript:alert(1)", "must be an http:// or https:// URL"),
        ("example.com/path", "must be an http:// or https:// URL"),
        ("https://", "must name a host"),
        ("https:///path", "must name a host"),
        ("https://exa mple.com", "must not contain white space"),
        ("https://example.com:99999", "is not a valid URL"),
        ("https://user:pw@example.com", "must not embed credentials"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        http_url(url, "config[url]")
    assert err.value.field == "config[url]"
    assert reason in err.value.message


def test_webhook_and_http_need_a_url_but_mcp_does_not() -> None:
    for kind in ("webhook", "http"):
        with pytest.raises(InvalidArgument, match=r"config\[url\] is required"):
            connector_config(kind, {})
    assert connector_config("mcp", {"command": "tools-server"}) == {"command": "tools-server"}


def test_config_limits() -> None:
    assert len(connector_config("mcp", {f"k{i}": "v" for i in range(50)})) == 50
    with pytest.raises(InvalidArgument, match="config has 51 keys"):
        connector_config("mcp", {f"k{i}": "v" for i in range(51)})
    with pytest.raises(InvalidArgument, match="config key ''"):
        connector_config("mcp", {"": "v"})
    with pytest.raises(InvalidArgument) as err:
        connector_config("mcp", {"k" * 101: "v"})
    assert err.value.field == "config"
    with pytest.raises(InvalidArgument) as err:
        connector_config("mcp", {"token": "v" * 4_097})
    assert err.value.field == "config[token]"
