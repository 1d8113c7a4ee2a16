"""Port plan and per-service environment of `edrs dev up`, from the services' declarations."""

from __future__ import annotations

import json

import pytest
from edrs_cli.fleet import (
    EngineEndpoints,
    ServiceDiscoveryError,
    ServicePorts,
    ServiceSpec,
    assign_ports,
    default_ports,
    fleet_order,
    fleet_services,
    service_env,
    service_names,
)

# Read from the declarations, as `edrs dev up` reads them.
SERVICES = fleet_services()

ENGINES = EngineEndpoints(
    postgres="postgresql://postgres@127.0.0.1:5999",
    redis="redis://127.0.0.1:6999",
    nats="nats://127.0.0.1:4999",
    temporal="127.0.0.1:7999",
    vault="http://127.0.0.1:8999",
    vault_token="dev-root-token",
)


def always_free(port: int, host: str) -> bool:
    return True


def test_the_fleet_has_the_eight_services_in_order() -> None:
    assert service_names() == [
        "gateway",
        "persona",
        "memory",
        "knowledge",
        "reasoning",
        "task",
        "research",
        "integration",
    ]


def test_default_ports_follow_the_documented_plan() -> None:
    ports = assign_ports(SERVICES, is_free=always_free)
    assert ports["gateway"] == ServicePorts(grpc=50051, http=8080, metrics=8081)
    assert ports["persona"] == ServicePorts(grpc=50052, http=8102, metrics=8103)
    assert ports["integration"] == ServicePorts(grpc=50058, http=8114, metrics=8115)
    assert default_ports(2, SERVICES[2]) == ports["memory"]


def test_busy_ports_are_replaced_by_free_ones_without_collisions() -> None:
    busy = {8080, 50053, 8103}
    spare = iter([8103, 50051, 40001, 40002, 40003])  # first two collide and must be skipped

    ports = assign_ports(
        SERVICES, is_free=lambda port, host: port not in busy, next_free=lambda host: next(spare)
    )
    assert ports["gateway"].http == 40001
    assert ports["persona"].metrics == 40002
    assert ports["memory"].grpc == 40003
    every_port = [p for sp in ports.values() for p in (sp.grpc, sp.http, sp.metrics)]
    assert len(every_port) == len(set(every_port))
    assert not busy & set(every_port)


def test_service_env_carries_the_contract_and_the_parent_environment() -> None:
    ports = assign_ports(SERVICES, is_free=always_free)
    env = service_env(SERVICES[2], 2, ports, ENGINES, base={"OTEL_SERVICE_NAME": "x", "PATH": "/b"})

    assert env["OTEL_SERVICE_NAME"] == "x"
    assert env["PATH"] == "/b"
    assert env["EDRS_ENVIRONMENT"] == "development"
    assert env["EDRS_MEMORY_HOST"] == "127.0.0.1"
    assert env["EDRS_MEMORY_GRPC_PORT"] == "50053"
    assert env["EDRS_MEMORY_HTTP_PORT"] == "8104"
    assert env["EDRS_MEMORY_METRICS_PORT"] == "8105"
    assert env["EDRS_MEMORY_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5999/edrs_memory"
    assert env["EDRS_MEMORY_REDIS_URL"] == "redis://127.0.0.1:6999/2"
    assert env["EDRS_MEMORY_BUS_URL"] == "nats://127.0.0.1:4999"
    assert env["EDRS_MEMORY_TEMPORAL_ADDRESS"] == "127.0.0.1:7999"
    assert env["EDRS_MEMORY_VAULT_ADDRESS"] == "http://127.0.0.1:8999"
    assert env["EDRS_MEMORY_VAULT_TOKEN"] == "dev-root-token"
    peers = json.loads(env["EDRS_MEMORY_PEERS"])
    assert peers["persona"] == "127.0.0.1:50052"
    assert set(peers) == set(service_names())


def test_each_service_gets_its_own_redis_database() -> None:
    ports = assign_ports(SERVICES, is_free=always_free)
    urls = [
        service_env(spec, i, ports, ENGINES)[f"{spec.env_prefix}REDIS_URL"]
        for i, spec in enumerate(SERVICES)
    ]
    assert len(set(urls)) == len(SERVICES)


def test_a_service_that_declares_no_ports_comes_after_the_declared_ones() -> None:
    extra = ServiceSpec("echo")
    services = fleet_order([extra, *SERVICES])
    assert services[-1] == extra
    ports = assign_ports(services, is_free=always_free)
    assert ports["echo"] == ServicePorts(grpc=50059, http=8116, metrics=8117)
    assert extra.module == "edrs_echo" and extra.env_prefix == "EDRS_ECHO_"


def test_an_uninstalled_folder_runs_from_its_source() -> None:
    spec = ServiceSpec("echo", python_path="/checkout/services/echo/src")
    services = (*SERVICES, spec)
    ports = assign_ports(services, is_free=always_free)
    env = service_env(spec, len(SERVICES), ports, ENGINES, base={"PYTHONPATH": "/lib"})
    assert env["PYTHONPATH"] == "/checkout/services/echo/src:/lib"
    assert env["EDRS_ECHO_REDIS_URL"] == f"redis://127.0.0.1:6999/{len(SERVICES)}"
    installed = service_env(SERVICES[0], 0, ports, ENGINES, base={"PYTHONPATH": "/lib"})
    assert installed["PYTHONPATH"] == "/lib"


def test_an_interpreter_that_declares_no_service_is_refused_naming_the_fix(tmp_path) -> None:
    # Stands in for an environment where no service is installed: its registry lists none.
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho '{\"services\": []}'\n")
    python.chmod(0o755)
    with pytest.raises(ServiceDiscoveryError, match=r"no service is declared.*make install"):
        fleet_services(None, str(python))


def test_a_broken_declaration_stops_the_launch_with_the_registrys_message(tmp_path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "pyproject.toml").write_text(
        '[project.entry-points."edrs.services"]\nbroken = "no_such_module_here.app:definition"\n'
    )
    with pytest.raises(ServiceDiscoveryError, match=r"cannot import no_such_module_here\.app"):
        fleet_services(tmp_path)
