"""The ``edrs`` command line and the local fleet supervisor behind ``edrs dev``."""

from edrs_cli.fleet import SERVICES, ServicePorts, ServiceSpec, assign_ports, service_env
from edrs_cli.supervisor import Fleet, FleetError, ServiceStatus

__all__ = [
    "SERVICES",
    "Fleet",
    "FleetError",
    "ServicePorts",
    "ServiceSpec",
    "ServiceStatus",
    "assign_ports",
    "service_env",
]
