"""Contract tests: protos follow the naming rules and the checked-in edrs_proto stubs are fresh."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from edrs_core.registry import service_names
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_protos.py"
STUBS_DIR = REPO_ROOT / "libs" / "edrs-proto" / "src" / "edrs_proto"


def _run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def proto_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[descriptor_pb2.FileDescriptorProto]:
    """The descriptors protoc builds from protos/, i.e. what the compiler really sees."""
    out = tmp_path_factory.mktemp("descriptors") / "set.pb"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    assert files, f"no .proto files under {PROTO_ROOT}"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--descriptor_set_out={out}",
            *files,
        ]
    )
    assert status == 0, "protoc could not compile protos/"
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(descriptor_set.file)


def _messages(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> dict[str, descriptor_pb2.DescriptorProto]:
    return {f".{f.package}.{m.name}": m for f in files for m in f.message_type}


def test_checked_in_stubs_match_generator() -> None:
    result = _run_generator("--check")
    assert result.returncode == 0, (
        f"edrs_proto is stale; run `make proto`.\n{result.stdout}{result.stderr}"
    )


def test_check_lists_every_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "edrs_proto"
    shutil.copytree(STUBS_DIR, stale, ignore=shutil.ignore_patterns("__pycache__"))
    (stale / "persona" / "v1" / "persona_pb2.pyi").write_text("# hand-edited\n")
    (stale / "task" / "v1" / "task_pb2_grpc.py").unlink()
    (stale / "persona" / "v1" / "leftover_pb2.py").write_text("")

    result = _run_generator("--check", "--out", str(stale))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "differs: persona/v1/persona_pb2.pyi" in result.stdout
    assert "missing: task/v1/task_pb2_grpc.py" in result.stdout
    assert "extra: persona/v1/leftover_pb2.py" in result.stdout


def test_generator_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert _run_generator("--out", str(first)).returncode == 0
    assert _run_generator("--out", str(second)).returncode == 0
    result = _run_generator("--check", "--out", str(second))
    assert result.returncode == 0, result.stdout
    assert sorted(p.read_bytes() for p in first.rglob("*.py*")) == sorted(
        p.read_bytes() for p in second.rglob("*.py*")
    )


def test_package_matches_path(proto_files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    for file in proto_files:
        parts = file.name.split("/")
        assert len(parts) == 4 and parts[0] == "edrs" and parts[2] == "v1", (
            f"{file.name}: expected protos/edrs/<area>/v1/<area>.proto"
        )
        area = parts[1]
        # <area>.proto holds the area's main service; a further service of the same service
        # (integration's ToolService, in tools.proto) may have a file of its own.
        assert re.fullmatch(r"[a-z][a-z0-9_]*\.proto", parts[3]), f"{file.name}: file name"
        assert file.package == f"edrs.{area}.v1", (
            f"{file.name}: package is {file.package!r}, expected 'edrs.{area}.v1'"
        )
        assert file.syntax == "proto3", f"{file.name}: syntax must be proto3"


def test_every_service_has_an_rpc(proto_files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    services = [(f.name, s) for f in proto_files for s in f.service]
    assert len(services) >= 8, f"expected one service per EDRS service, found {len(services)}"
    for file_name, service in services:
        assert service.method, f"{file_name}: service {service.name} has no rpc"


# List RPCs whose result is bounded by design, so a page would only add a round trip.
BOUNDED_LISTS = {
    "MemoryService.ListWorkingItems": "bounded by the working-memory maximum count",
    "MemoryService.ListFacts": "the facts about one user of one persona",
    "PersonaService.ListCoworkers": "the co-workers of one persona",
    "ToolService.ListTools": "a tenant's tool registry, which a persona's turn reads whole",
}


def test_get_and_list_rpcs_follow_the_naming_rules(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    messages = _messages(proto_files)
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    for file in proto_files:
        for service in file.service:
            for rpc in service.method:
                where = f"{file.name}: {service.name}.{rpc.name}"
                request = messages[rpc.input_type]
                if rpc.name.startswith("Get"):
                    assert request.name == f"{rpc.name}Request", f"{where}: request name"
                    # One resource by its id, or by the ids of its key (a persona's relationship
                    # with a user), or a singleton (no fields).
                    fields = [(f.name, f.type) for f in request.field]
                    assert all(
                        t == string and (n == "id" or n.endswith("_id")) for n, t in fields
                    ), f"{where}: Get<X>Request holds only the resource's id fields"
                if rpc.name.startswith("List"):
                    if f"{service.name}.{rpc.name}" in BOUNDED_LISTS:
                        continue
                    response = messages[rpc.output_type]
                    page_in = {f.name: f.type_name for f in request.field}
                    page_out = {f.name: f.type_name for f in response.field}
                    assert page_in.get("page") == ".edrs.common.v1.PageRequest", where
                    assert page_out.get("page") == ".edrs.common.v1.PageInfo", where


def test_only_tenant_admin_carries_the_tenant_as_a_field(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    tenant_fields = {"tenant_id", "client_id", "tenant"}
    for file in proto_files:
        if file.package == "edrs.gateway.v1":
            continue
        for message in file.message_type:
            clash = tenant_fields & {f.name for f in message.field}
            assert not clash, (
                f"{file.name}: {message.name} has {clash}; the tenant travels in the "
                "caller's identity token"
            )


# Every declared service has its proto area (tests/contracts/test_service_registry.py).
@pytest.mark.parametrize("area", service_names())
def test_grpc_stubs_import(
    area: str, proto_files: list[descriptor_pb2.FileDescriptorProto]
) -> None:
    files = [f for f in proto_files if f.package == f"edrs.{area}.v1"]
    assert f"edrs/{area}/v1/{area}.proto" in {f.name for f in files}
    for file in files:
        module = importlib.import_module(f"edrs_proto.{area}.v1.{_stem(file)}_pb2_grpc")
        assert file.service, f"{file.name} declares no service"
        for service in file.service:
            for name in (
                f"{service.name}Stub",
                f"{service.name}Servicer",
                f"add_{service.name}Servicer_to_server",
            ):
                assert hasattr(module, name), f"{module.__name__} lacks {name}"


def _stem(file: descriptor_pb2.FileDescriptorProto) -> str:
    return Path(file.name).stem


def _servicer_bases(area: str, stem: str) -> dict[str, type]:
    module = importlib.import_module(f"edrs_proto.{area}.v1.{stem}_pb2_grpc")
    return {
        name.removesuffix("Servicer"): cls
        for name, cls in vars(module).items()
        if name.endswith("Servicer") and isinstance(cls, type)
    }


# The servicers of this project: a generated base's method left as it is answers UNIMPLEMENTED,
# which no client of a declared RPC expects.
@pytest.mark.parametrize("area", service_names())
def test_every_declared_rpc_is_implemented_by_its_service(
    area: str, proto_files: list[descriptor_pb2.FileDescriptorProto]
) -> None:
    for file in [f for f in proto_files if f.package == f"edrs.{area}.v1"]:
        stem = _stem(file)
        # <area>.proto's servicer is in edrs_<area>.server, <stem>.proto's in <stem>_server.
        where = f"edrs_{area}.server" if stem == area else f"edrs_{area}.{stem}_server"
        server = importlib.import_module(where)
        bases = _servicer_bases(area, stem)
        for service in file.service:
            base = bases[service.name]
            implementations = [
                cls
                for cls in vars(server).values()
                if isinstance(cls, type) and cls is not base and issubclass(cls, base)
            ]
            assert len(implementations) == 1, (
                f"{where} should define one {service.name} servicer, found {implementations}"
            )
            [servicer] = implementations
            missing = [
                rpc.name
                for rpc in service.method
                if getattr(servicer, rpc.name) is getattr(base, rpc.name)
            ]
            assert not missing, f"{servicer.__name__} does not implement {missing}"


READ_PREFIXES = ("Get", "List", "Search", "Recall")


def test_read_rpcs_declare_no_side_effects(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    """docs/contracts.md: peer clients retry UNAVAILABLE only for RPCs declaring an idempotency
    level, so a read without it is never retried and a write with it could run twice."""
    no_side_effects = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    for file in proto_files:
        for service in file.service:
            for rpc in service.method:
                where = f"{file.name}: {service.name}.{rpc.name}"
                level = rpc.options.idempotency_level
                if rpc.name.startswith(READ_PREFIXES):
                    assert level == no_side_effects, f"{where} reads but is not NO_SIDE_EFFECTS"
                elif rpc.name.startswith(("Create", "Delete", "Update", "Record")):
                    assert level != no_side_effects, f"{where} writes but claims no side effects"


def test_enums_and_times_follow_the_naming_rules(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    """docs/contracts.md: enum values carry the enum's name as prefix and start with
    <ENUM>_UNSPECIFIED = 0; times are google.protobuf.Timestamp fields named *_time."""
    for file in proto_files:
        enums = [(e.name, e) for e in file.enum_type] + [
            (f"{m.name}.{e.name}", e) for m in file.message_type for e in m.enum_type
        ]
        for name, enum in enums:
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
            assert enum.value[0].name == f"{prefix}UNSPECIFIED", f"{file.name}: {name}"
            assert enum.value[0].number == 0, f"{file.name}: {name}"
            for value in enum.value:
                assert value.name.startswith(prefix), f"{file.name}: {name}.{value.name}"
        for message in file.message_type:
            for field in message.field:
                where = f"{file.name}: {message.name}.{field.name}"
                is_time = field.type_name == ".google.protobuf.Timestamp"
                # A fact's validity bounds (valid_from, valid_to) keep their bitemporal names.
                named_as_time = field.name.endswith("_time") or field.name.startswith("valid_")
                assert is_time == named_as_time, f"{where}: times are Timestamps named *_time"
