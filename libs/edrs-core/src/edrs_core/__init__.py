"""EDRS service runtime: what every service process is built from."""

from edrs_core import validation
from edrs_core.clock import Clock, ManualClock, SystemClock
from edrs_core.consumers import ConsumedEvent, Consumer
from edrs_core.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PeerNotConfigured,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
    peer_error,
)
from edrs_core.grpc_server import GrpcService, ServicerContext
from edrs_core.runtime import LocalPorts, Runtime, ServiceDefinition, run_service
from edrs_core.settings import ServiceSettings, SettingsError, load_settings

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Clock",
    "ConsumedEvent",
    "Consumer",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GrpcService",
    "Internal",
    "InvalidArgument",
    "LocalPorts",
    "ManualClock",
    "NotFound",
    "OutOfRange",
    "PeerNotConfigured",
    "PermissionDenied",
    "ResourceExhausted",
    "Runtime",
    "ServiceDefinition",
    "ServiceError",
    "ServiceSettings",
    "ServicerContext",
    "SettingsError",
    "SystemClock",
    "Unauthenticated",
    "Unavailable",
    "load_settings",
    "peer_error",
    "run_service",
    "validation",
]
