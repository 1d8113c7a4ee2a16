"""The research service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_proto.common.v1 import common_pb2
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from edrs_research.app import definition

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


@pytest.fixture(scope="module")
async def research(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_research", redis_db=6
    )
    # An operator exception, as EDRS_RESEARCH_OUTBOUND_ALLOW would set it: one intranet network.
    settings["outbound_allow"] = ("10.20.0.0/16",)
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(research: testing.RunningService) -> research_pb2_grpc.ResearchServiceStub:
    return research_pb2_grpc.ResearchServiceStub(research.channel)


def unique_url(path: str = "") -> str:
    return f"https://{uuid.uuid4().hex}.example.org/{path}"


async def test_register_returns_the_normalised_source_with_its_credibility(stub) -> None:
    host = f"{uuid.uuid4().hex}.nasa.gov"
    created = await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(
            url=f"HTTPS://{host.upper()}:443/missions#apollo", title=" Missions "
        ),
        metadata=TENANT_A,
    )
    assert uuid.UUID(created.id)
    assert created.url == f"https://{host}/missions"
    assert created.title == "Missions"
    # 0.5, +0.30 government tier, +0.05 https, -0.05 no author and -0.05 no date (not read yet)
    assert created.credibility == 0.75
    assert created.create_time.seconds > 0
    listed = await stub.ListSources(research_pb2.ListSourcesRequest(), metadata=TENANT_A)
    assert created in listed.sources


async def test_title_defaults_to_the_url(stub) -> None:
    url = unique_url("paper")
    created = await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_A
    )
    assert created.title == url


async def test_registering_the_same_page_again_is_already_exists(stub) -> None:
    host = f"{uuid.uuid4().hex}.example.org"
    url = f"https://{host}/report"
    await stub.RegisterSource(research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_A)
    err = await testing.expect_rpc_error(
        stub.RegisterSource(
            research_pb2.RegisterSourceRequest(url=f"https://{host.upper()}:443/report#top"),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert f"url {url}" in err.details()


async def test_tenants_register_and_list_sources_independently(stub) -> None:
    url = unique_url("shared")
    mine = await stub.RegisterSource(research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_A)
    theirs = await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_B
    )
    assert mine.id != theirs.id
    listed = await stub.ListSources(
        research_pb2.ListSourcesRequest(page=common_pb2.PageRequest(page_size=200)),
        metadata=TENANT_B,
    )
    assert mine.id not in {s.id for s in listed.sources}
    assert theirs.id in {s.id for s in listed.sources}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (research_pb2.RegisterSourceRequest(url=""), "url is required"),
        (
            research_pb2.RegisterSourceRequest(url="ftp://example.com/"),
            "url must use http or https",
        ),
        (
            research_pb2.RegisterSourceRequest(url="http://localhost:8080/admin"),
            "url host localhost",
        ),
        (
            research_pb2.RegisterSourceRequest(url="http://169.254.169.254/latest/meta-data"),
            "url host 169.254.169.254 is a link-local address",
        ),
        (
            research_pb2.RegisterSourceRequest(url="https://admin:pw@example.com/"),
            "url must not carry credentials",
        ),
        (
            research_pb2.RegisterSourceRequest(url="https://example.com/", title="t" * 501),
            "title is 501 characters long",
        ),
    ],
)
async def test_invalid_register_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.RegisterSource(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_the_operators_outbound_allow_rule_opens_that_network_only(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4().hex}")
    inside = f"http://10.20.3.4/{uuid.uuid4().hex}"
    created = await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(url=inside), metadata=tenant
    )
    assert created.url == inside
    await testing.expect_rpc_error(
        stub.RegisterSource(
            research_pb2.RegisterSourceRequest(url="http://10.21.0.1/"), metadata=tenant
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url host 10.21.0.1 is a private address",
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.RegisterSource(research_pb2.RegisterSourceRequest(url=unique_url())),
        stub.ListSources(research_pb2.ListSourcesRequest()),
    )


async def test_list_pages_through_every_source_once(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4()}")
    made = []
    for i in range(7):
        s = await stub.RegisterSource(
            research_pb2.RegisterSourceRequest(url=unique_url(str(i))), metadata=tenant
        )
        made.append(s.id)
    sources = await testing.collect_pages(
        stub.ListSources, research_pb2.ListSourcesRequest, "sources", page_size=3, metadata=tenant
    )
    assert [s.id for s in sources] == made


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListSources(
            research_pb2.ListSourcesRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )


async def test_a_registered_source_is_announced_once(stub, research) -> None:
    url = unique_url("announced")
    created = await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_A
    )
    await testing.expect_rpc_error(
        stub.RegisterSource(research_pb2.RegisterSourceRequest(url=url), metadata=TENANT_A),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # One event: the duplicate registration announced nothing.
    [event] = await testing.published_events(research, "research.source_registered", created.id)
    assert event["payload"] == {
        "source_id": created.id,
        "url": url,
        "credibility": pytest.approx(created.credibility),
    }
    assert (event["client_id"], event["source_container"]) == (
        testing.tenant_of(TENANT_A),
        "research",
    )
