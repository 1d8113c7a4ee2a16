"""The local fleet's one service list, its port plan and each service's environment."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edrs_core.engines.ports import DEFAULT_HOST, free_port, port_is_free


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the fleet; run as ``python -m edrs_<name>``."""

    name: str
    # Fixed HTTP/metrics ports; None means the default 8100+2i / 8101+2i for list index i.
    http_port: int | None = None
    metrics_port: int | None = None

    @property
    def module(self) -> str:
        return f"edrs_{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"EDRS_{self.name.upper()}_"


# Adding a service to `edrs dev up` is one entry here.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("gateway", http_port=8080, metrics_port=8081),
    ServiceSpec("persona"),
    ServiceSpec("memory"),
    ServiceSpec("knowledge"),
    ServiceSpec("reasoning"),
    ServiceSpec("task"),
    ServiceSpec("research"),
    ServiceSpec("integration"),
)

GRPC_BASE_PORT = 50051
HTTP_BASE_PORT = 8100


def service_names(services: Sequence[ServiceSpec] = SERVICES) -> list[str]:
    return [spec.name for spec in services]


@dataclass(frozen=True)
class ServicePorts:
    grpc: int
    http: int
    metrics: int


def default_ports(index: int, spec: ServiceSpec) -> ServicePorts:
    """The preferred ports of the service at ``index`` in the list."""
    return ServicePorts(
        grpc=GRPC_BASE_PORT + index,
        http=spec.http_port if spec.http_port is not None else HTTP_BASE_PORT + 2 * index,
        metrics=spec.metrics_port
        if spec.metrics_port is not None
        else HTTP_BASE_PORT + 2 * index + 1,
    )


def assign_ports(
    services: Sequence[ServiceSpec] = SERVICES,
    *,
    host: str = DEFAULT_HOST,
    is_free: Callable[[int, str], bool] = port_is_free,
    next_free: Callable[[str], int] = free_port,
) -> dict[str, ServicePorts]:
    """Default ports per service; any busy one is replaced by a free port (never a failure)."""
    taken: set[int] = set()

    def claim(preferred: int) -> int:
        port = preferred
        while port in taken or not is_free(port, host):
            port = next_free(host)
        taken.add(port)
        return port

    assigned: dict[str, ServicePorts] = {}
    for index, spec in enumerate(services):
        wanted = default_ports(index, spec)
        assigned[spec.name] = ServicePorts(
            grpc=claim(wanted.grpc), http=claim(wanted.http), metrics=claim(wanted.metrics)
        )
    return assigned


@dataclass(frozen=True)
class EngineEndpoints:
    """Where the shared engines listen: URLs without a database part."""

    postgres: str  # postgresql://postgres@127.0.0.1:PORT
    redis: str  # redis://127.0.0.1:PORT
    nats: str  # nats://127.0.0.1:PORT


def service_env(
    spec: ServiceSpec,
    index: int,
    ports: Mapping[str, ServicePorts],
    engines: EngineEndpoints,
    *,
    host: str = DEFAULT_HOST,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one service process: the parent's plus its EDRS_<NAME>_* settings."""
    own = ports[spec.name]
    prefix = spec.env_prefix
    peers = {name: f"{host}:{service_ports.grpc}" for name, service_ports in ports.items()}
    env = dict(base or {})
    env.update(
        {
            "EDRS_ENVIRONMENT": "development",
            f"{prefix}HOST": host,
            f"{prefix}GRPC_PORT": str(own.grpc),
            f"{prefix}HTTP_PORT": str(own.http),
            f"{prefix}METRICS_PORT": str(own.metrics),
            # Each service owns its database; it creates it when absent.
            f"{prefix}DATABASE_URL": f"{engines.postgres}/edrs_{spec.name}",
            # One Redis database per service keeps their keys apart.
            f"{prefix}REDIS_URL": f"{engines.redis}/{index}",
            f"{prefix}NATS_URL": engines.nats,
            f"{prefix}PEERS": json.dumps(peers),
        }
    )
    return env
