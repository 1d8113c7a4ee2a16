"""The outbound resolve setting (`EDRS_<SERVICE>_OUTBOUND_RESOLVE`, like curl --resolve): named
hosts get fixed addresses, which the policy still checks like any resolved address."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

import pytest
from edrs_core.outbound import (
    OutboundBlocked,
    OutboundConnectionError,
    OutboundServiceSettings,
    parse_resolve_entries,
    static_resolver,
)
from edrs_core.testing_http import LoopbackHttpServer, respond

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Settings(OutboundServiceSettings):
    uses_redis: ClassVar[bool] = False


def settings(**values: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        database_url="postgresql://unused/unused", environment="development", **values
    )


def test_entries_parse_to_canonical_hosts() -> None:
    assert parse_resolve_entries(
        ["News.Example.TEST=127.0.0.1", "news.example.test=127.0.0.2", " bücher.test = [::1] "]
    ) == {
        "news.example.test": (LOOPBACK, ipaddress.ip_address("127.0.0.2")),
        "xn--bcher-kva.test": (ipaddress.ip_address("::1"),),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("news.example.test", "is not host=address"),
        ("news.example.test=not-an-ip", "is not host=address"),
        ("=127.0.0.1", "is not host=address"),
        ("10.0.0.1=127.0.0.1", "only host names are resolved"),
    ],
)
def test_a_bad_entry_is_refused_by_name(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(outbound_resolve=entry)


def test_the_setting_reads_a_comma_list_or_json() -> None:
    assert settings(outbound_resolve="a.test=127.0.0.1, b.test=127.0.0.1").outbound_resolve == (
        "a.test=127.0.0.1",
        "b.test=127.0.0.1",
    )
    assert settings(outbound_resolve='["a.test=127.0.0.1"]').outbound_resolve == (
        "a.test=127.0.0.1",
    )


async def test_unmapped_names_go_to_the_fallback() -> None:
    calls: list[str] = []

    async def fallback(host: str, port: int) -> list[ipaddress.IPv4Address]:
        calls.append(host)
        return [ipaddress.ip_address("93.184.215.14")]  # type: ignore[list-item]

    resolve = static_resolver({"a.test": (LOOPBACK,)}, fallback)
    assert list(await resolve("a.test", 80)) == [LOOPBACK]
    assert calls == []
    assert [str(a) for a in await resolve("b.test", 80)] == ["93.184.215.14"]
    assert calls == ["b.test"]
    with pytest.raises(OutboundConnectionError, match="not mapped"):
        await static_resolver({}, None)("b.test", 80)


async def test_a_mapped_name_reaches_loopback_only_when_the_operator_allows_it() -> None:
    async with LoopbackHttpServer(routes={"/": respond(200, b"hello")}) as server:
        url = f"http://site.example.test:{server.port}/"
        resolve = "site.example.test=127.0.0.1"
        async with settings(outbound_resolve=resolve).outbound_client() as closed:
            with pytest.raises(OutboundBlocked, match=r"resolves to 127\.0\.0\.1"):
                await closed.get(url)
        assert server.connections == 0
        opened = settings(outbound_resolve=resolve, outbound_allow="site.example.test")
        async with opened.outbound_client(user_agent="resolve-test") as client:
            response = await client.get(url)
            # Loopback by address stays refused: the rule opened the name, not the network.
            with pytest.raises(OutboundBlocked, match="loopback"):
                await client.get(server.url("/"))
        assert (response.status, response.body) == (200, b"hello")
        [request] = server.requests
        assert request.headers["host"] == f"site.example.test:{server.port}"
        assert request.headers["user-agent"] == "resolve-test"
