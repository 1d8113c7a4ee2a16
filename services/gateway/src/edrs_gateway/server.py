"""The tenant administration gRPC servicer: validates requests and manages tenants."""

from __future__ import annotations

from edrs_core import NotFound, ServicerContext, validation
from edrs_core.context import require_operator
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from edrs_gateway.auth.principal import Tier
from edrs_gateway.store import NewTenant, Tenant, TenantStore
from edrs_gateway.tenants import tenant_name

_TIER_TO_PROTO: dict[Tier, gateway_pb2.Tier.ValueType] = {
    "standard": gateway_pb2.TIER_STANDARD,
    "professional": gateway_pb2.TIER_PROFESSIONAL,
    "enterprise": gateway_pb2.TIER_ENTERPRISE,
}
# The contract says TIER_UNSPECIFIED means TIER_STANDARD, so an unset tier is not an error.
_TIER_FROM_PROTO: dict[gateway_pb2.Tier.ValueType, Tier] = {
    gateway_pb2.TIER_UNSPECIFIED: "standard",
    **{number: tier for tier, number in _TIER_TO_PROTO.items()},
}


def to_proto(t: Tenant) -> gateway_pb2.Tenant:
    return gateway_pb2.Tenant(
        id=str(t.id), name=t.name, tier=_TIER_TO_PROTO[t.tier], create_time=timestamp(t.created_at)
    )


class TenantServicer(gateway_pb2_grpc.TenantServiceServicer):
    """Operator RPCs about tenants themselves, so they are not scoped to a tenant: each needs an
    operator's identity (a token with role `operator`, which only `edrs admin operator-token`
    signs), never a tenant user's or a service's."""

    def __init__(self, store: TenantStore) -> None:
        self.store = store

    async def CreateTenant(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.CreateTenantRequest, context: ServicerContext
    ) -> gateway_pb2.Tenant:
        require_operator()
        new = NewTenant(
            name=tenant_name(request.name),
            tier=validation.enum_value(request.tier, "tier", _TIER_FROM_PROTO, gateway_pb2.Tier),
        )
        return to_proto(await self.store.create(new))

    async def GetTenant(  # noqa: N802
        self, request: gateway_pb2.GetTenantRequest, context: ServicerContext
    ) -> gateway_pb2.Tenant:
        require_operator()
        tenant = await self.store.get(parse_id(request.id))
        if tenant is None:
            raise NotFound(f"tenant {request.id} not found")
        return to_proto(tenant)

    async def ListTenants(  # noqa: N802
        self, request: gateway_pb2.ListTenantsRequest, context: ServicerContext
    ) -> gateway_pb2.ListTenantsResponse:
        require_operator()
        tenants, token = await self.store.list(request.page.page_token, request.page.page_size)
        return gateway_pb2.ListTenantsResponse(
            tenants=[to_proto(t) for t in tenants],
            page=common_pb2.PageInfo(next_page_token=token),
        )
