"""EDRS service runtime: what every service process is built from."""

from edrs_core import validation
from edrs_core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from edrs_core.grpc_server import GrpcService
from edrs_core.runtime import LocalPorts, Runtime, ServiceDefinition, run_service
from edrs_core.settings import ServiceSettings, SettingsError, load_settings

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "GrpcService",
    "InvalidArgument",
    "LocalPorts",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Runtime",
    "ServiceDefinition",
    "ServiceError",
    "ServiceSettings",
    "SettingsError",
    "Unauthenticated",
    "Unavailable",
    "load_settings",
    "run_service",
    "validation",
]
