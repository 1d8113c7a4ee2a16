"""Only the bus adapters speak to a broker: every other module uses `EventBus` (`Runtime.bus`), so
`EDRS_<SERVICE>_BUS_URL` alone chooses NATS, Pulsar or the in-process bus."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROKER_CLIENTS = {"nats", "pulsar"}
ADAPTERS = {
    ROOT / "libs/edrs-events/src/edrs_events/nats_bus.py",
    ROOT / "libs/edrs-events/src/edrs_events/pulsar_bus.py",
}


def broker_imports(path: Path) -> list[str]:
    """`import nats...` / `from pulsar... import` statements of one module (also nested ones)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".", 1)[0] in BROKER_CLIENTS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    return found


def source_files() -> list[Path]:
    return sorted(
        path
        for pattern in ("libs/*/src/**/*.py", "services/*/src/**/*.py")
        for path in ROOT.glob(pattern)
        if "_pb2" not in path.name
    )


def test_no_module_outside_the_adapters_imports_a_broker_client() -> None:
    files = source_files()
    assert len(files) > 100, "the glob found the source tree"
    offenders = [line for path in files if path not in ADAPTERS for line in broker_imports(path)]
    assert offenders == []


def test_the_check_sees_the_adapters_imports() -> None:
    # The check above is only worth something if it recognises an import when there is one.
    for adapter in ADAPTERS:
        assert broker_imports(adapter), adapter
