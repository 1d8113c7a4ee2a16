"""The tenant administration service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_gateway.app import definition
from edrs_proto.common.v1 import common_pb2
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration


def unique(name: str) -> str:
    """`name` made unique, so a second run against a server that kept the first's data passes."""
    return f"{name} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def gateway(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway", redis_db=0
    )
    # Outside development the gateway refuses its default key-encryption secret.
    async with testing.running_service(
        definition, **settings, key_encryption_secret="test-key-encryption-secret-0123456789"
    ) as svc:
        yield svc


@pytest.fixture
async def stub(
    gateway: testing.RunningService,
) -> AsyncIterator[gateway_pb2_grpc.TenantServiceStub]:
    """Tenant administration as an operator: every call carries an operator's identity token."""
    async with testing.channel_with(gateway.grpc_address, testing.operator_metadata()) as channel:
        yield gateway_pb2_grpc.TenantServiceStub(channel)


async def test_create_then_get_returns_what_was_stored(stub) -> None:
    name = unique("Acme Corp.")
    created = await stub.CreateTenant(
        gateway_pb2.CreateTenantRequest(name=f"  {name} ", tier=gateway_pb2.TIER_ENTERPRISE)
    )
    assert created.name == name
    assert created.tier == gateway_pb2.TIER_ENTERPRISE
    assert created.create_time.seconds > 0
    fetched = await stub.GetTenant(gateway_pb2.GetTenantRequest(id=created.id))
    assert fetched == created


async def test_unset_tier_means_standard_as_the_contract_says(stub) -> None:
    created = await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name=unique("Tierless Ltd")))
    assert created.tier == gateway_pb2.TIER_STANDARD


async def test_admin_calls_need_no_tenant_metadata(stub) -> None:
    # Tenant administration is about tenants themselves: the operator's identity names no tenant.
    created = await stub.CreateTenant(
        gateway_pb2.CreateTenantRequest(name=unique("No Metadata Inc"))
    )
    listed = await stub.ListTenants(gateway_pb2.ListTenantsRequest())
    assert created.id in {t.id for t in listed.tenants}


async def test_tenant_administration_needs_an_operator_identity(gateway) -> None:
    tenants = gateway_pb2_grpc.TenantServiceStub(gateway.channel)
    sneaky = unique("Sneaky Inc")
    request = gateway_pb2.CreateTenantRequest(name=sneaky)
    # No credentials at all, or only the tenant header the port used to believe.
    await testing.expect_rpc_error(
        tenants.CreateTenant(request), grpc.StatusCode.UNAUTHENTICATED, "no identity token"
    )
    await testing.expect_rpc_error(
        tenants.ListTenants(
            gateway_pb2.ListTenantsRequest(), metadata=[(testing.TENANT_HEADER, "tenant-a")]
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "not trusted",
    )
    # A tenant's admin, and a service's own token, are not operators.
    admin = testing.tenant_metadata("tenant-a", role="admin")
    service = testing.test_issuer().service_token_metadata("persona", "tenant-a")
    for metadata in (admin, service):
        await testing.expect_rpc_error(
            tenants.CreateTenant(request, metadata=metadata),
            grpc.StatusCode.PERMISSION_DENIED,
            "operator",
        )
        await testing.expect_rpc_error(
            tenants.ListTenants(gateway_pb2.ListTenantsRequest(), metadata=metadata),
            grpc.StatusCode.PERMISSION_DENIED,
            "operator",
        )
    listed = await testing.collect_pages(
        tenants.ListTenants,
        gateway_pb2.ListTenantsRequest,
        "tenants",
        page_size=100,
        metadata=testing.operator_metadata(),
    )
    assert sneaky not in {t.name for t in listed}


async def test_duplicate_name_ignoring_case_is_refused(stub) -> None:
    name = unique("Globex")
    await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name=name))
    await testing.expect_rpc_error(
        stub.CreateTenant(gateway_pb2.CreateTenantRequest(name=name.upper())),
        grpc.StatusCode.ALREADY_EXISTS,
        name.upper(),
    )


async def test_unknown_tenant_is_not_found(stub) -> None:
    await testing.expect_rpc_error(
        stub.GetTenant(gateway_pb2.GetTenantRequest(id="0190d6a0-0000-7000-8000-000000000000")),
        grpc.StatusCode.NOT_FOUND,
    )


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
    await testing.expect_rpc_error(
        stub.CreateTenant(request_), grpc.StatusCode.INVALID_ARGUMENT, field
    )


async def test_get_with_a_malformed_id_names_the_field(stub) -> None:
    await testing.expect_rpc_error(
        stub.GetTenant(gateway_pb2.GetTenantRequest(id="acme")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id must be a UUID",
    )


async def test_list_pages_through_every_tenant_once_oldest_first(stub) -> None:
    run = uuid.uuid4().hex[:8]
    made = [
        (await stub.CreateTenant(gateway_pb2.CreateTenantRequest(name=f"Paging {run} {i}"))).id
        for i in range(7)
    ]
    tenants = await testing.collect_pages(
        stub.ListTenants, gateway_pb2.ListTenantsRequest, "tenants", page_size=3
    )
    seen = [t.id for t in tenants]
    # Other tests add tenants too; what matters is that ours come once each, in creation order.
    assert [t for t in seen if t in made] == made
    assert len(seen) == len(set(seen))


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListTenants(
            gateway_pb2.ListTenantsRequest(page=common_pb2.PageRequest(page_token="garbage!"))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )
