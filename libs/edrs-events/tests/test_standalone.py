"""`edrs-events` installs alone into an empty virtualenv and its own fast tests pass there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "check_standalone.sh"


@pytest.mark.slow
def test_package_installs_alone_and_its_tests_pass_in_a_fresh_venv() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:] or result.stdout[-3000:]
    assert "site-packages/edrs_events" in result.stdout, "the test ran against the installed wheel"
    assert " passed" in result.stdout
