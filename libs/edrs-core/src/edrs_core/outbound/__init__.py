"""Outbound HTTP for every service: one SSRF-safe client and the policy it enforces.

    policy = OutboundPolicy(allow=settings.outbound_allow)      # or settings.outbound_policy()
    policy.check_url(url)                                        # validation, resolves nothing
    async with OutboundClient(policy, settings.outbound_limits()) as client:
        response = await client.get(url, host_rules=tenant_rules)

Every refusal or failure is an `OutboundError` subclass with a `reason`.
"""

from edrs_core.outbound._addresses import METADATA_ADDRESSES, IpAddress, Refusal, classify
from edrs_core.outbound._client import (
    OutboundClient,
    OutboundLimits,
    OutboundResponse,
)
from edrs_core.outbound._errors import (
    OutboundBlocked,
    OutboundConnectionError,
    OutboundError,
    OutboundInvalidUrl,
    OutboundProtocolError,
    OutboundResponseTooLarge,
    OutboundTimeout,
    OutboundTlsError,
    OutboundTooManyRedirects,
)
from edrs_core.outbound._policy import HostPattern, HostRules, OutboundPolicy
from edrs_core.outbound._settings import OutboundServiceSettings
from edrs_core.outbound._transport import (
    HOST_RULES_EXTENSION,
    OutboundTransport,
    Resolver,
    parse_resolve_entries,
    static_resolver,
    system_resolver,
)
from edrs_core.outbound._urls import DEFAULT_PORTS, OutboundUrl, parse_url

__all__ = [
    "DEFAULT_PORTS",
    "HOST_RULES_EXTENSION",
    "METADATA_ADDRESSES",
    "HostPattern",
    "HostRules",
    "IpAddress",
    "OutboundBlocked",
    "OutboundClient",
    "OutboundConnectionError",
    "OutboundError",
    "OutboundInvalidUrl",
    "OutboundLimits",
    "OutboundPolicy",
    "OutboundProtocolError",
    "OutboundResponse",
    "OutboundResponseTooLarge",
    "OutboundServiceSettings",
    "OutboundTimeout",
    "OutboundTlsError",
    "OutboundTooManyRedirects",
    "OutboundTransport",
    "OutboundUrl",
    "Refusal",
    "Resolver",
    "classify",
    "parse_resolve_entries",
    "parse_url",
    "static_resolver",
    "system_resolver",
]
