"""The web console's own checks, run with the suite: TypeScript type-checks, the Vitest unit tests
pass, and the lock file installs what package.json asks (the build is `make console`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "console"


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    found = shutil.which("npm")
    assert found, "npm is needed for the web console (Node.js 20; see docs/console.md)"
    return subprocess.run(
        [found, *args], cwd=CONSOLE, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed() -> None:
    if not (CONSOLE / "node_modules" / ".edrs-installed").exists():
        result = npm("ci", "--no-audit", "--no-fund")
        assert result.returncode == 0, result.stdout + result.stderr
        (CONSOLE / "node_modules" / ".edrs-installed").touch()


def test_the_lock_file_pins_every_declared_package() -> None:
    package = json.loads((CONSOLE / "package.json").read_text())
    lock = json.loads((CONSOLE / "package-lock.json").read_text())
    locked = lock["packages"][""]
    for section in ("dependencies", "devDependencies"):
        assert locked.get(section) == package.get(section), section
        for name in package.get(section, {}):
            assert f"node_modules/{name}" in lock["packages"], name


def test_the_console_type_checks(installed) -> None:
    result = npm("run", "typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_pass(installed) -> None:
    result = npm("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and " failed" not in result.stdout, result.stdout
