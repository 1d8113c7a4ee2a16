"""The fleet as `make run` starts it: every service healthy over HTTP and gRPC, and a clean stop."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from edrs_cli.fleet import service_names
from edrs_core.engines.pytest_plugin import engine_dir
from edrs_core.testing import write_service_folder
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

SERVICES = service_names()


# It starts a fleet of its own: the harness runs it before the shared fleet starts (and refuses a
# second fleet while one runs), so two fleets never compete for the 2 CPU cores. Its fleet has a
# ninth service that exists only as a folder with its declaration (no other file names it), so
# `down` must stop that one too.
def test_down_stops_every_process_of_the_fleet(tmp_path: Path, fleet_control) -> None:
    write_service_folder(tmp_path / "services", "echo")
    with engine_dir("own-fleet") as folder:
        own = fleet_control.start(folder / "state", services_dir=tmp_path / "services")
        _the_ninth_service_runs_beside_the_others(own)
        pids = own.pids()
        assert set(SERVICES) <= set(pids)
        assert "echo" in pids
        assert all(psutil.pid_exists(pid) for pid in pids.values())

        leftovers = fleet_control.stop(own)

        assert leftovers == {}
        assert own.up_process.returncode == 0, own.up_output.read_text()
        assert not (own.state_dir / "fleet.json").exists()
        status = own.edrs("dev", "status")
        assert status.returncode == 1
        assert "no fleet is running" in status.stderr


def _the_ninth_service_runs_beside_the_others(own) -> None:
    """The throw-away service started by `edrs dev up` from its folder, wired like the rest."""
    assert own.services["echo"]["ready"]
    assert own.state["services"][-1]["name"] == "echo", "undeclared ports: after the others"
    described = httpx.get(f"{own.http_url('echo')}/echo/peers", timeout=5).json()
    assert described["service"] == "echo"
    assert described["peers"]["gateway"] == own.grpc_address("gateway")
    assert described["peers"]["echo"] == own.grpc_address("echo")
    with grpc.insecure_channel(own.grpc_address("echo")) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    status = own.edrs("dev", "status")
    assert status.returncode == 0 and "echo" in status.stdout
    assert own.edrs("dev", "logs", "echo", "-n", "50").returncode == 0


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("probe", ["liveness", "readiness", "startup"])
def test_health_endpoints_answer_200(fleet, service: str, probe: str) -> None:
    response = httpx.get(f"{fleet.http_url(service)}/health/{probe}", timeout=5)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_expose_edrs_and_process_metrics(fleet, service: str) -> None:
    response = httpx.get(fleet.metrics_url(service), timeout=5)
    assert response.status_code == 200
    names = {
        line.split(" ", 3)[2] for line in response.text.splitlines() if line.startswith("# TYPE ")
    }
    assert any(name.startswith("edrs_") for name in names), sorted(names)
    assert any(name.startswith("process_") for name in names), sorted(names)


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_health_check_is_serving(fleet, service: str) -> None:
    with grpc.insecure_channel(fleet.grpc_address(service)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_status_table_lists_every_service(fleet) -> None:
    result = fleet.edrs("dev", "status")
    assert result.returncode == 0, result.stderr
    for service in SERVICES:
        assert service in result.stdout


def test_a_second_up_on_the_same_state_dir_is_refused(fleet) -> None:
    result = fleet.edrs("dev", "up", "--wait-timeout", "5")
    assert result.returncode == 1
    assert "already running" in result.stdout + result.stderr
    assert fleet.up_process.poll() is None, "the running fleet must be left alone"


def test_logs_shows_the_service_log(fleet) -> None:
    result = fleet.edrs("dev", "logs", "persona", "--lines", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert result.stdout.strip().splitlines()[-1] in fleet.log("persona")


def test_events_commands_reach_the_fleets_bus(fleet) -> None:
    payload = json.dumps({"webhook_id": "wh-1", "delivery_id": "d-1"})
    published = fleet.edrs_in_fleet(
        "events", "publish", "integration.webhook_received", "--payload", payload
    )
    assert published.returncode == 0, published.stderr
    refused = fleet.edrs_in_fleet(
        "events", "publish", "integration.webhook_received", "--payload", "{}"
    )
    assert refused.returncode != 0
    assert "webhook_id" in refused.stdout + refused.stderr
