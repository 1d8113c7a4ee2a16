"""Outbound settings, shared by every service that calls out (`EDRS_<SERVICE>_OUTBOUND_*`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from edrs_core.outbound._client import OutboundLimits
from edrs_core.outbound._policy import HostPattern, OutboundPolicy
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

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(allow=self.outbound_allow)

    def outbound_limits(self) -> OutboundLimits:
        return OutboundLimits(
            max_redirects=self.outbound_max_redirects,
            max_response_bytes=self.outbound_max_response_bytes,
            timeout_seconds=self.outbound_timeout_seconds,
            connect_timeout_seconds=self.outbound_connect_timeout_seconds,
        )
