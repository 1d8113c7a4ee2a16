"""Importing the Milvus adapter leaves the process environment as it was, even beside a `.env`
file (pymilvus loads one on import; run from the repository, that was compose's `.env`, whose
EDRS_* values then became the settings of every service and test in the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_importing_the_milvus_adapter_loads_no_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EDRS_ENVIRONMENT=development\nEDRS_FROM_DOTENV=leaked\n")
    env = {k: v for k, v in os.environ.items() if k not in ("EDRS_ENVIRONMENT", "EDRS_FROM_DOTENV")}
    probe = (
        "import json, os; import edrs_vectors.milvus; "
        "print(json.dumps([os.environ.get('EDRS_ENVIRONMENT'), os.environ.get('EDRS_FROM_DOTENV')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [None, None]
