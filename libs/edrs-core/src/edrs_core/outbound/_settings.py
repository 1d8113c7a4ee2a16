"""Outbound settings, shared by every service that calls out (`EDRS_<SERVICE>_OUTBOUND_*`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from edrs_core.outbound._client import DEFAULT_USER_AGENT, OutboundClient, OutboundLimits
from edrs_core.outbound._policy import HostPattern, OutboundPolicy
from edrs_core.outbound._transport import (
    Resolver,
    parse_resolve_entries,
    static_resolver,
    system_resolver,
)
from edrs_core.settings import ServiceSettings, comma_or_json_list

_DEFAULTS = OutboundLimits()


class OutboundServiceSettings(ServiceSettings):
    """ServiceSettings of a service that sends HTTP requests to URLs it is given."""

    outbound_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Internal hosts and networks outbound requests may reach despite the SSRF "
        "policy, comma-separated or a JSON list of host names, *.wildcards, IPs and CIDRs; "
        "empty = public internet only",
    )
    outbound_resolve: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Fixed addresses for host names, like curl --resolve: comma-separated or a "
        "JSON list of host=address (news.example.test=127.0.0.1); a name given twice has both "
        "addresses. The address is still checked by the policy (loopback needs an allow rule). "
        "Other names use the system resolver",
    )
    outbound_max_redirects: int = Field(default=_DEFAULTS.max_redirects, ge=0, le=20)
    outbound_max_response_bytes: int = Field(default=_DEFAULTS.max_response_bytes, ge=1)
    outbound_timeout_seconds: float = Field(default=_DEFAULTS.timeout_seconds, gt=0)
    outbound_connect_timeout_seconds: float = Field(default=_DEFAULTS.connect_timeout_seconds, gt=0)

    @field_validator("outbound_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        return comma_or_json_list(value)

    @field_validator("outbound_allow")
    @classmethod
    def _check_allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            HostPattern.parse(entry)  # ValueError names the entry
        return value

    @field_validator("outbound_resolve", mode="before")
    @classmethod
    def _split_resolve(cls, value: Any) -> Any:
        return comma_or_json_list(value)

    @field_validator("outbound_resolve")
    @classmethod
    def _check_resolve(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_resolve_entries(value)  # ValueError names the entry
        return value

    def outbound_resolver(self) -> Resolver:
        """The system resolver, with the names of `outbound_resolve` answered from the setting."""
        mapping = parse_resolve_entries(self.outbound_resolve)
        return static_resolver(mapping) if mapping else system_resolver

    def outbound_client(self, *, user_agent: str = DEFAULT_USER_AGENT) -> OutboundClient:
        """An OutboundClient built from these settings (policy, limits, resolver); close it."""
        return OutboundClient(
            self.outbound_policy(),
            self.outbound_limits(),
            resolver=self.outbound_resolver(),
            user_agent=user_agent,
        )

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(allow=self.outbound_allow)

    def outbound_limits(self) -> OutboundLimits:
        return OutboundLimits(
            max_redirects=self.outbound_max_redirects,
            max_response_bytes=self.outbound_max_response_bytes,
            timeout_seconds=self.outbound_timeout_seconds,
            connect_timeout_seconds=self.outbound_connect_timeout_seconds,
        )
