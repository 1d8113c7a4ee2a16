"""The tenant administration service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core.testing import RunningService, running_service
from edrs_gateway.app import definition
from edrs_proto.common.v1 import common_pb2
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    async with running_service(
        definition,
        database_url=postgres_engine.url("test_gateway"),
        redis_url=redis_engine.url(0),
        nats_url=nats_engine.url(),
    ) as svc:
        yield svc


@pytest.fixture
def stub(gateway: RunningService) -> gateway_pb2_grpc.TenantServiceStub:
    return gateway_pb2_grpc.TenantServiceStub(gateway.channel)


async def test_create_then_get_returns_what_was_stored(stub) -> None:
    created = await stub.CreateTenant(
        gateway_pb2.CreateTenantRequest(name="  Acme Corp. ", tier=gateway_pb2.TIER_ENTERPRISE)
    )
    assert created.name == "Acme Corp."
    assert created.tier == gateway_pb2.TIER_ENTERPRISE
    assert created.create_time.seconds > 0
    fetched = await stub.GetTenant(gateway_pb2.GetTenantRequest(id=created.id))
    assert fetched == created


async def test_unset_tier_means_standard_as_the_contract_says(stub) -> None:
    created = await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name="Tierless Ltd"))
    assert created.tier == gateway_pb2.TIER_STANDARD


async def test_admin_calls_need_no_tenant_metadata(stub) -> None:
    # Tenant administration is about tenants themselves, so no x-edrs-client-id is required.
    created = await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name="No Metadata Inc"))
    listed = await stub.ListTenants(gateway_pb2.ListTenantsRequest())
    assert created.id in {t.id for t in listed.tenants}


async def test_duplicate_name_ignoring_case_is_refused(stub) -> None:
    await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name="Globex"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name="GLOBEX"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "GLOBEX" in err.value.details()


async def test_unknown_tenant_is_not_found(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetTenant(
            gateway_pb2.GetTenantRequest(id="0190d6a0-0000-7000-8000-000000000000")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (gateway_pb2.CreateTenantRequest(name=""), "name is required"),
        (gateway_pb2.CreateTenantRequest(name="   "), "name is required"),
        (gateway_pb2.CreateTenantRequest(name="n" * 201), "name is 201 characters"),
        (gateway_pb2.CreateTenantRequest(name="Bobby'; DROP"), "name may contain only"),
        (gateway_pb2.CreateTenantRequest(name="ok", tier=42), "tier must be one of"),
    ],
)
async def test_invalid_create_names_the_field(stub, request_, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTenant(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


async def test_get_with_a_malformed_id_names_the_field(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetTenant(gateway_pb2.GetTenantRequest(id="acme"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "id must be a UUID" in err.value.details()


async def test_list_pages_through_every_tenant_once_oldest_first(stub) -> None:
    made = [
        (await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name=f"Paging {i}"))).id
        for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTenants(
            gateway_pb2.ListTenantsRequest(
                page=common_pb2.PageRequest(page_size=3, page_token=token)
            )
        )
        assert len(page.tenants) <= 3
        seen += [t.id for t in page.tenants]
        token = page.page.next_page_token
        if not token:
            break
    # Other tests add tenants too; what matters is that ours come once each, in creation order.
    assert [t for t in seen if t in made] == made
    assert len(seen) == len(set(seen))


async def test_bad_page_token_is_refused(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTenants(
            gateway_pb2.ListTenantsRequest(page=common_pb2.PageRequest(page_token="garbage!"))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page.page_token" in err.value.details()
