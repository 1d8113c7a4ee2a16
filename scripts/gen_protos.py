"""Generate the `edrs_proto` package (messages, gRPC stubs and their type stubs) from protos/.

Usage: .venv/bin/python scripts/gen_protos.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
DEFAULT_OUT = REPO_ROOT / "libs" / "edrs-proto" / "src" / "edrs_proto"
# The plugins live beside the interpreter running this script (the venv's bin/).
VENV_BIN = Path(sys.executable).parent
PROTO_PACKAGE = "edrs"
PYTHON_PACKAGE = "edrs_proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

# protoc names Python modules after the proto path, so a file importing
# "edrs/common/v1/common.proto" gets `from edrs.common.v1 import common_pb2 as ...`.
# Our package is `edrs_proto`, so rewrite the leading `edrs` of such import statements.
# Anchored at line start (MULTILINE) so only real import statements match: fully qualified
# names inside strings, e.g. '/edrs.persona.v1.PersonaService/GetPersona', must stay as they are
# because they are the wire names of the RPCs. protoletariat does this job too, but it pins
# protobuf<6 and our runtime is protobuf 7.
_IMPORT_RE = re.compile(r"^(\s*from\s+)edrs(\.[\w.]+\s+import\s)", re.MULTILINE)
# `import edrs.x.y` would also need every use site rewritten; the plugins do not emit it today,
# so refuse loudly instead of producing a half-rewritten module.
_BARE_IMPORT_RE = re.compile(r"^\s*import\s+edrs\.", re.MULTILINE)

_TOP_INIT = '''"""Generated Python stubs for the EDRS gRPC contracts in protos/ (do not edit).

Regenerate with `make proto`; import as `from edrs_proto.persona.v1 import persona_pb2`.
"""
'''
_SUB_INIT = (
    '"""Generated package for {proto_package} (do not edit; see scripts/gen_protos.py)."""\n'
)


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under proto_root, sorted so protoc sees them in a stable order."""
    return sorted(proto_root.rglob("*.proto"))


def _run_protoc(proto_root: Path, out_dir: Path) -> None:
    # Imported here so `--help` works without grpcio-tools installed.
    import grpc_tools
    from grpc_tools import protoc

    plugins = {name: VENV_BIN / name for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")}
    for name, path in plugins.items():
        if not path.exists():
            raise SystemExit(
                f"gen_protos: plugin {name} not found at {path}; pip install mypy-protobuf"
            )
    # grpc_tools ships google/protobuf/*.proto (timestamp.proto etc.) as its include dir.
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(proto_root)) for p in proto_files(proto_root)]
    if not files:
        raise SystemExit(f"gen_protos: no .proto files under {proto_root}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={plugins['protoc-gen-mypy']}",
        f"--plugin=protoc-gen-mypy_grpc={plugins['protoc-gen-mypy_grpc']}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *files,
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"gen_protos: protoc failed with exit status {status}")


def _rewrite_imports(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if _BARE_IMPORT_RE.search(text):
        raise SystemExit(f"gen_protos: {path} uses `import edrs.`; extend _IMPORT_RE to handle it")
    new_text = _IMPORT_RE.sub(rf"\g<1>{PYTHON_PACKAGE}\g<2>", text)
    if new_text != text:
        path.write_text(new_text, encoding="utf-8")


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Write the complete edrs_proto package into out_dir, which must be empty or absent."""
    with tempfile.TemporaryDirectory(prefix="edrs-protoc-") as raw:
        raw_dir = Path(raw)
        _run_protoc(proto_root, raw_dir)
        generated_root = raw_dir / PROTO_PACKAGE
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(generated_root, out_dir, dirs_exist_ok=True)
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
            _rewrite_imports(path)
    (out_dir / "__init__.py").write_text(_TOP_INIT, encoding="utf-8")
    (out_dir / "py.typed").write_text("", encoding="utf-8")
    for sub in sorted(p for p in out_dir.rglob("*") if p.is_dir()):
        proto_package = ".".join((PROTO_PACKAGE, *sub.relative_to(out_dir).parts))
        (sub / "__init__.py").write_text(
            _SUB_INIT.format(proto_package=proto_package), encoding="utf-8"
        )


def _tree_files(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def diff_trees(expected: Path, actual: Path) -> list[str]:
    """Relative paths that are missing, extra or different in actual compared with expected."""
    expected_files, actual_files = _tree_files(expected), _tree_files(actual)
    problems = [f"missing: {name}" for name in sorted(expected_files - actual_files)]
    problems += [f"extra: {name}" for name in sorted(actual_files - expected_files)]
    problems += [
        f"differs: {name}"
        for name in sorted(expected_files & actual_files)
        if not filecmp.cmp(expected / name, actual / name, shallow=False)
    ]
    return problems


def sync(fresh: Path, target: Path) -> list[str]:
    """Make target identical to fresh, touching only files that changed; returns the changes."""
    changes = diff_trees(fresh, target)
    for name in sorted(_tree_files(target) - _tree_files(fresh)):
        (target / name).unlink()
    for name in sorted(_tree_files(fresh)):
        destination = target / name
        if not destination.exists() or not filecmp.cmp(fresh / name, destination, shallow=False):
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / name, destination)
    # Drop directories left empty by a removed .proto (bottom-up so parents empty last).
    for directory in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
        if directory.name != "__pycache__" and not any(directory.iterdir()):
            directory.rmdir()
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"package directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temp dir; exit 1 listing the files in --out that are stale",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="edrs-proto-") as tmp:
        fresh = Path(tmp) / PYTHON_PACKAGE
        generate(fresh)
        if args.check:
            problems = diff_trees(fresh, out_dir)
            if problems:
                print(f"gen_protos: generated code in {out_dir} is stale; run `make proto`:")
                print("\n".join(f"  {line}" for line in problems))
                return 1
            print(f"gen_protos: {out_dir} is up to date")
            return 0
        changes = sync(fresh, out_dir)
    print(f"gen_protos: wrote {out_dir} ({len(changes)} file(s) changed)")
    for line in changes:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
