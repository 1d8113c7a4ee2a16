"""The local fleet's services (read from their declarations), port plan and environments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from edrs_core.engines.ports import DEFAULT_HOST, free_port, port_is_free
from edrs_core.identity import private_key_pem, public_key_pem
from edrs_core.registry import ServiceDescription


class ServiceDiscoveryError(RuntimeError):
    """The declared services cannot be read; the message names the declaration to fix."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the fleet, as its declaration says (see `edrs_core.registry`); run as
    ``python -m <module>`` with its settings under ``<env_prefix>``."""

    name: str
    module: str = ""  # default edrs_<name>
    env_prefix: str = ""  # default EDRS_<NAME>_
    # Preferred local ports; None means 50051+i, 8100+2i, 8101+2i for fleet position i.
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    # The import root of a service folder that is not installed, put first on its PYTHONPATH.
    python_path: str | None = None

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", f"edrs_{self.name}")
        if not self.env_prefix:
            object.__setattr__(self, "env_prefix", f"EDRS_{self.name.upper()}_")

    @classmethod
    def of(cls, description: ServiceDescription) -> ServiceSpec:
        ports = description.local_ports
        return cls(
            name=description.name,
            module=description.module,
            env_prefix=description.env_prefix,
            grpc_port=None if ports is None else ports.grpc,
            http_port=None if ports is None else ports.http,
            metrics_port=None if ports is None else ports.metrics,
            python_path=description.python_path,
        )


def fleet_order(specs: Iterable[ServiceSpec]) -> tuple[ServiceSpec, ...]:
    """Services with declared ports first, by gRPC port (the documented plan: the gateway first),
    then the others by name; the position also picks each one's Redis database."""
    return tuple(sorted(specs, key=lambda s: (s.grpc_port is None, s.grpc_port or 0, s.name)))


@cache
def fleet_services(
    services_dir: Path | None = None, python: str = sys.executable
) -> tuple[ServiceSpec, ...]:
    """Every declared service, in fleet order: the installed ones and the folders of
    ``services_dir`` not installed yet.

    The declarations are loaded by ``python -m edrs_core.registry`` in the services' interpreter,
    so the launcher imports no service (and sees what that interpreter would run).
    """
    command = [python, "-m", "edrs_core.registry"]
    if services_dir is not None:
        command += ["--services-dir", str(services_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceDiscoveryError(f"cannot read the declared services: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().removeprefix("error: ") or f"exit code {done.returncode}"
        raise ServiceDiscoveryError(f"cannot read the declared services: {detail}")
    described = json.loads(done.stdout)["services"]
    if not described:
        where = f" nor in {services_dir}" if services_dir is not None else ""
        raise ServiceDiscoveryError(
            f"no service is declared: none is installed in {python}'s environment{where}; "
            "run `make install` (each service declares itself in its pyproject.toml)"
        )
    return fleet_order(ServiceSpec.of(ServiceDescription.from_json(d)) for d in described)


GRPC_BASE_PORT = 50051
HTTP_BASE_PORT = 8100


def service_names(services: Sequence[ServiceSpec] | None = None) -> list[str]:
    """The names of ``services`` (default: every declared service), in fleet order."""
    return [spec.name for spec in (fleet_services() if services is None else services)]


@dataclass(frozen=True)
class ServicePorts:
    grpc: int
    http: int
    metrics: int


def default_ports(index: int, spec: ServiceSpec) -> ServicePorts:
    """The preferred ports of the service at ``index`` in the fleet: its declared ones, else by
    position."""
    return ServicePorts(
        grpc=spec.grpc_port if spec.grpc_port is not None else GRPC_BASE_PORT + index,
        http=spec.http_port if spec.http_port is not None else HTTP_BASE_PORT + 2 * index,
        metrics=spec.metrics_port
        if spec.metrics_port is not None
        else HTTP_BASE_PORT + 2 * index + 1,
    )


def assign_ports(
    services: Sequence[ServiceSpec],
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
    temporal: str  # 127.0.0.1:PORT (a Temporal frontend address has no scheme)
    # The OpenBao server (Vault's API) and a token for it. The local fleet is one trust domain
    # run by one developer; production gives each service its own auth (docs/deployment.md).
    vault: str = ""  # http://127.0.0.1:PORT
    vault_token: str = ""


# Where the gateway publishes the keys every service verifies identity tokens with.
FLEET_JWKS_PATH = "/api/v1/.well-known/fleet-jwks.json"
JWKS_PUBLISHER = "gateway"  # the service that serves FLEET_JWKS_PATH


SERVICE_KEYS_FILE = "service-keys.json"


def service_keys(services: Sequence[ServiceSpec], state_dir: Path | None = None) -> dict[str, str]:
    """An Ed25519 key (PEM) per service, for its service tokens. Kept in the state directory
    (owner-only) so a restarted fleet keeps its keys; a service without one gets a new one."""
    path = state_dir / SERVICE_KEYS_FILE if state_dir is not None else None
    keys: dict[str, str] = json.loads(path.read_text()) if path and path.exists() else {}
    missing = [spec.name for spec in services if spec.name not in keys]
    for name in missing:
        keys[name] = private_key_pem(Ed25519PrivateKey.generate())
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys))
    return {spec.name: keys[spec.name] for spec in services}


def identity_env(
    spec: ServiceSpec, ports: Mapping[str, ServicePorts], keys: Mapping[str, str], host: str
) -> dict[str, str]:
    """Trust settings of one service: the gateway's fleet JWKS, its own service key; and for the
    gateway, the public half of every service's key, which it publishes in that JWKS."""
    prefix = spec.env_prefix
    env = {f"{prefix}SERVICE_KEY": keys[spec.name]}
    if JWKS_PUBLISHER in ports:
        env[f"{prefix}JWKS_URL"] = f"http://{host}:{ports[JWKS_PUBLISHER].http}{FLEET_JWKS_PATH}"
    if spec.name == JWKS_PUBLISHER:
        public = {}
        for name, pem in keys.items():
            private = load_pem_private_key(pem.encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            public[name] = public_key_pem(private.public_key())
        env[f"{prefix}SERVICE_KEYS"] = json.dumps(public)
    return env


def service_env(
    spec: ServiceSpec,
    index: int,
    ports: Mapping[str, ServicePorts],
    engines: EngineEndpoints,
    *,
    host: str = DEFAULT_HOST,
    base: Mapping[str, str] | None = None,
    keys: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one service process: the parent's plus its EDRS_<NAME>_* settings
    (with `keys` from `service_keys()`, its trust settings too)."""
    own = ports[spec.name]
    prefix = spec.env_prefix
    peers = {name: f"{host}:{service_ports.grpc}" for name, service_ports in ports.items()}
    env = dict(base or {})
    if spec.python_path:
        # A service folder that is not installed runs from its source.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [spec.python_path, env.get("PYTHONPATH")]))
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
            f"{prefix}BUS_URL": engines.nats,
            # Read by the services that run workflows (task); ignored by the others, like REDIS_URL.
            f"{prefix}TEMPORAL_ADDRESS": engines.temporal,
            f"{prefix}PEERS": json.dumps(peers),
        }
    )
    if engines.vault:
        env[f"{prefix}VAULT_ADDRESS"] = engines.vault
        env[f"{prefix}VAULT_TOKEN"] = engines.vault_token
    if keys is not None:
        env.update(identity_env(spec, ports, keys, host))
    return env
