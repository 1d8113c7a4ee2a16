"""The ``edrs`` command line and the local fleet supervisor behind ``edrs dev``."""

from edrs_cli.fleet import (
    ServicePorts,
    ServiceSpec,
    assign_ports,
    fleet_services,
    service_env,
)
from edrs_cli.supervisor import Fleet, FleetError, ServiceStatus

__all__ = [
    "Fleet",
    "FleetError",
    "ServicePorts",
    "ServiceSpec",
    "ServiceStatus",
    "assign_ports",
    "fleet_services",
    "service_env",
]
