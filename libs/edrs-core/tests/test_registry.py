"""The service registry: services found by their one declaration, installed or in a folder."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from edrs_core.registry import (
    RegistryError,
    ServiceDeclaration,
    declarations,
    describe,
    folder_declarations,
    installed_declarations,
    main,
)
from edrs_core.runtime import LocalPorts
from edrs_core.testing import write_service_folder


def unique(prefix: str = "echo") -> str:
    # Each test imports its own package: names must not meet in sys.modules.
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_the_fleets_services_declare_their_definitions_and_ports() -> None:
    installed = {d.name: d for d in installed_declarations()}
    assert installed["gateway"].target == "edrs_gateway.app:definition"
    assert installed["gateway"].origin == "distribution edrs-gateway"
    gateway = describe(installed["gateway"])
    assert gateway.module == "edrs_gateway"
    assert gateway.env_prefix == "EDRS_GATEWAY_"
    assert gateway.local_ports == LocalPorts(grpc=50051, http=8080, metrics=8081)
    assert gateway.python_path is None


def test_a_folder_that_is_not_installed_is_found_by_its_pyproject(tmp_path: Path) -> None:
    name = unique()
    folder = write_service_folder(tmp_path, name)

    (found,) = folder_declarations(tmp_path)
    assert found.name == name and found.source == (folder / "src").resolve()
    assert name in [d.name for d in declarations(tmp_path)]
    assert "gateway" in [d.name for d in declarations(tmp_path)]

    described = describe(found)
    assert described.module == f"edrs_{name}"
    assert described.env_prefix == f"EDRS_{name.upper()}_"
    assert described.local_ports is None
    assert described.python_path == str(folder / "src")


def test_the_launchers_view_is_printed_as_json_by_the_services_interpreter(tmp_path: Path) -> None:
    name = unique()
    write_service_folder(tmp_path, name)
    done = subprocess.run(
        [sys.executable, "-m", "edrs_core.registry", "--services-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    services = {s["name"]: s for s in json.loads(done.stdout)["services"]}
    assert services[name]["pythonPath"] == str(tmp_path / name / "src")
    assert services["persona"]["localPorts"] == {"grpc": 50052, "http": 8102, "metrics": 8103}


def test_an_installed_service_wins_over_a_folder_of_the_same_name(tmp_path: Path) -> None:
    folder = tmp_path / "gateway"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.entry-points."edrs.services"]\n'
        'gateway = "somewhere_else.app:definition"\n'
    )
    (gateway,) = [d for d in declarations(tmp_path) if d.name == "gateway"]
    assert gateway.target == "edrs_gateway.app:definition" and gateway.source is None


def _declaring(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "svc"
    folder.mkdir(exist_ok=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "svc"\n[project.entry-points."edrs.services"]\n{body}\n'
    )
    return folder


def test_a_bad_service_name_is_refused_naming_the_declaration(tmp_path: Path) -> None:
    _declaring(tmp_path, '"Echo-1" = "edrs_echo.app:definition"')
    with pytest.raises(RegistryError, match=r"svc/pyproject.toml: service name 'Echo-1'"):
        folder_declarations(tmp_path)


def test_two_folders_declaring_one_name_are_refused(tmp_path: Path) -> None:
    for folder, target in (("a", "edrs_a.app:definition"), ("b", "edrs_b.app:definition")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "pyproject.toml").write_text(
            f'[project.entry-points."edrs.services"]\nsame = "{target}"\n'
        )
    with pytest.raises(RegistryError, match="service 'same' is declared twice"):
        folder_declarations(tmp_path)


def test_a_target_that_is_not_a_service_definition_is_refused(tmp_path: Path) -> None:
    name = unique()
    folder = write_service_folder(tmp_path, name)
    declaration = ServiceDeclaration(
        name, f"edrs_{name}.app:build", "test", (folder / "src").resolve()
    )
    with pytest.raises(RegistryError, match=r"not an edrs_core\.ServiceDefinition"):
        declaration.load()
    missing = ServiceDeclaration(name, f"edrs_{name}.nowhere:definition", "test", folder / "src")
    with pytest.raises(RegistryError, match=rf"cannot import edrs_{name}\.nowhere"):
        missing.load()


def test_the_entry_point_name_must_be_the_settings_service_name(tmp_path: Path) -> None:
    name = unique()
    folder = write_service_folder(tmp_path, name)
    wrong = ServiceDeclaration("other", f"edrs_{name}.app:definition", "test", folder / "src")
    with pytest.raises(RegistryError, match=f"named 'other' but .* service_name = '{name}'"):
        wrong.load()


def test_a_package_without_main_cannot_be_launched(tmp_path: Path) -> None:
    name = unique()
    folder = write_service_folder(tmp_path, name)
    (folder / "src" / f"edrs_{name}" / "__main__.py").unlink()
    (found,) = folder_declarations(tmp_path)
    with pytest.raises(RegistryError, match=rf"edrs_{name} has no __main__.py"):
        describe(found)


def test_the_command_reports_a_broken_declaration_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _declaring(tmp_path, 'broken = "no_such_package_here.app:definition"')
    assert main(["--services-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "cannot import no_such_package_here.app" in err
