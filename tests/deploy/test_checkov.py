"""checkov over the rendered chart, the Dockerfile and the Terraform: nothing fails.

checkov pins dependencies the project outgrew (networkx<3 where torch needs 3), so it lives in a
venv of its own that `make install` and `make test` create (.venv-checkov, locked by
requirements-checkov.txt); EDRS_CHECKOV points at another checkov. Checks skipped in
.checkov.yaml are skipped for the reason written beside each."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("EDRS_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
CONFIG = ROOT / ".checkov.yaml"
# A deliberately bad manifest scanned with the others: the scan must flag it, so a run that checks
# nothing cannot pass.
CANARY = "canary-privileged.yaml"


@pytest.fixture(scope="module")
def report(
    rendered: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make install` (it creates .venv-checkov)")
    scan = tmp_path_factory.mktemp("checkov")
    # Every value set, so the GPU pod, the monitoring objects and the ExternalSecrets are scanned.
    for name, objects in rendered.items():
        (scan / f"chart-{name}.yaml").write_text(yaml.safe_dump_all(objects))
    deployment = copy.deepcopy(next(o for o in rendered["defaults"] if o["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    (scan / CANARY).write_text(yaml.safe_dump(deployment))
    shutil.copy(ROOT / "Dockerfile", scan / "Dockerfile")
    shutil.copytree(ROOT / "terraform", scan / "terraform")
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "--output", "json", "--directory", str(scan)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.stdout, result.stderr
    parsed = json.loads(result.stdout)
    return parsed if isinstance(parsed, list) else [parsed]


def test_checkov_scans_every_framework_and_nothing_fails(report: list[dict[str, Any]]) -> None:
    by_type = {r["check_type"]: r for r in report}
    assert set(by_type) == {"kubernetes", "dockerfile", "terraform"}
    failures = []
    for check_type, result in by_type.items():
        summary = result["summary"]
        assert summary["resource_count"] > 0 and summary["passed"] > 0, check_type
        assert summary["parsing_errors"] == 0, check_type
        failures += [
            f"{check_type} {f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})"
            for f in result["results"]["failed_checks"]
            if not f["file_path"].endswith(CANARY)
        ]
    assert not failures, "\n".join(failures)


def test_the_scan_flags_the_privileged_canary(report: list[dict[str, Any]]) -> None:
    (kubernetes,) = [r for r in report if r["check_type"] == "kubernetes"]
    flagged = {
        f["check_id"]
        for f in kubernetes["results"]["failed_checks"]
        if f["file_path"].endswith(CANARY)
    }
    # Privileged, capabilities not dropped, privilege escalation allowed, root filesystem writable.
    assert {"CKV_K8S_16", "CKV_K8S_37", "CKV_K8S_20", "CKV_K8S_22"} <= flagged, flagged


def test_the_scan_covers_every_rendered_object(
    report: list[dict[str, Any]], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    (kubernetes,) = [r for r in report if r["check_type"] == "kubernetes"]
    objects = sum(len(objects) for objects in rendered.values())
    # checkov counts some objects twice (a Deployment and its pod template), never fewer.
    assert kubernetes["summary"]["resource_count"] >= objects + 1  # and the canary


def test_every_skipped_check_says_why() -> None:
    lines = CONFIG.read_text().splitlines()
    skipped = yaml.safe_load(CONFIG.read_text())["skip-check"]
    assert skipped
    for check in skipped:
        (at,) = [i for i, line in enumerate(lines) if re.fullmatch(rf"\s*-\s*{check}\s*", line)]
        assert lines[at - 1].strip().startswith("#"), f"{check} has no reason above it"
