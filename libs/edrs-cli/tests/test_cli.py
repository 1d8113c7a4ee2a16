"""`edrs dev` output and errors that need no running fleet."""

from __future__ import annotations

import json
from pathlib import Path

from edrs_cli.main import app
from edrs_cli.render import status_json, status_table
from edrs_cli.supervisor import ProcessExit, ServiceStatus
from rich.console import Console
from typer.testing import CliRunner

runner = CliRunner()

ROWS = [
    ServiceStatus("gateway", 101, "127.0.0.1:50051", "127.0.0.1:8080", "127.0.0.1:8081", True),
    ServiceStatus("persona", None, "127.0.0.1:50052", "127.0.0.1:8102", "127.0.0.1:8103", False),
]


def test_status_json_lists_the_documented_keys() -> None:
    parsed = json.loads(status_json(ROWS))
    assert parsed[0] == {
        "name": "gateway",
        "pid": 101,
        "grpc": "127.0.0.1:50051",
        "http": "127.0.0.1:8080",
        "metrics": "127.0.0.1:8081",
        "ready": True,
    }
    assert parsed[1]["pid"] is None
    assert parsed[1]["ready"] is False


def test_status_table_shows_every_service_and_its_readiness() -> None:
    console = Console(width=200, record=True)
    console.print(status_table(ROWS))
    text = console.export_text()
    assert "gateway" in text
    assert "127.0.0.1:8080" in text
    assert "yes" in text
    assert "persona" in text
    assert "no" in text


def test_status_without_a_fleet_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "status", "--state-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == []
    assert "no fleet is running" in result.stderr


def test_status_with_a_dead_supervisor_exits_1(tmp_path: Path) -> None:
    (tmp_path / "fleet.json").write_text(
        json.dumps({"supervisor": {"pid": 2**22 + 7, "create_time": 1.0}, "services": []})
    )
    result = runner.invoke(app, ["dev", "status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "is gone" in result.stderr


def test_down_without_a_fleet_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "no fleet is running" in result.stdout


def test_stop_and_start_without_a_fleet_exit_1_and_leave_no_hold(tmp_path: Path) -> None:
    for command in ("stop", "start"):
        result = runner.invoke(app, ["dev", command, "memory", "--state-dir", str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert "no fleet is running" in result.stderr
    assert not (tmp_path / "held").exists()


def test_logs_of_an_unknown_service_lists_the_valid_names(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "logs", "gatway", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown service 'gatway'" in result.stderr
    assert "gateway" in result.stderr
    assert "integration" in result.stderr


def test_logs_prints_the_tail(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "memory.log").write_text("".join(f"line {i}\n" for i in range(100)))
    result = runner.invoke(app, ["dev", "logs", "memory", "--state-dir", str(tmp_path), "-n", "3"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["line 97", "line 98", "line 99"]


def test_bad_option_values_are_rejected(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["dev", "up", "--state-dir", str(tmp_path), "--wait-timeout", "soon"]
    )
    assert result.exit_code == 2
    assert "--wait-timeout" in result.stderr
    assert not (tmp_path / "fleet.json").exists()


def test_admin_help_of_a_gateway_command_is_the_gateways_own(tmp_path: Path) -> None:
    # Needs no database: the gateway's command answers --help itself.
    result = runner.invoke(
        app, ["admin", "create-tenant", "--help"], env={"EDRS_STATE_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert "edrs-gateway-admin create-tenant" in result.stdout
    assert "--admin-email" in result.stdout


def test_admin_without_the_gateways_command_says_where_to_run_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["admin", "rotate-signing-key", "--database-url", "postgresql://nowhere/x"],
        env={"EDRS_GATEWAY_ADMIN_COMMAND": str(tmp_path / "missing-command")},
    )
    assert result.exit_code == 1
    assert "cannot run" in result.stderr and "missing-command" in result.stderr


def test_an_exit_is_explained_by_the_last_error_the_service_logged(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    lines = [
        {"level": "INFO", "message": "task starting"},
        {"level": "ERROR", "message": "an earlier error"},
        {"level": "ERROR", "message": "start-up failed: could not reach Temporal\nTraceback"},
        {"level": "INFO", "message": "Shutting down"},
    ]
    log.write_text(
        "\n".join(json.dumps(line) for line in lines) + "\nnot json {\n", encoding="utf-8"
    )
    exit = ProcessExit("task", 1, log)
    assert exit.reason() == "start-up failed: could not reach Temporal"
    quiet = tmp_path / "quiet.log"
    quiet.write_text('{"level": "INFO", "message": "stopped"}\nplain text\n', encoding="utf-8")
    assert ProcessExit("echo", -9, quiet).reason() is None
    assert ProcessExit("gone", 1, tmp_path / "missing.log").reason() is None
