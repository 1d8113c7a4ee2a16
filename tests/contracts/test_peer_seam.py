"""The seam for calling another service stays closed: outside edrs-core no code opens a gRPC
channel, builds a generated stub, reaches for a peer's raw channel or catches grpc's AioRpcError to
map a peer's status itself. Services call peers through `rt.peers.stub(...)`, whose failures are
mapped once (edrs_core.errors.peer_error)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "opens a gRPC channel": re.compile(r"\b(?:insecure|secure)_channel\("),
    "builds a generated stub (use rt.peers.stub(XServiceStub))": re.compile(r"\b[A-Z]\w*Stub\("),
    "takes a peer's raw channel (use rt.peers.stub)": re.compile(r"\bpeers\.channel\("),
    "maps a peer's gRPC error itself (catch the ServiceError edrs_core raises)": re.compile(
        r"\bAioRpcError\b"
    ),
}


def _sources() -> list[Path]:
    """Every Python source of the services and of the libs other than edrs-core (the seam
    itself) and edrs-proto (generated)."""
    roots = [*ROOT.glob("services/*/src"), *ROOT.glob("libs/*/src")]
    roots = [r for r in roots if r.parent.name not in ("edrs-core", "edrs-proto")]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _offences(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        found += [
            f"{number}: {why}: {line.strip()}" for why, rx in FORBIDDEN.items() if rx.search(code)
        ]
    return found


def test_the_patterns_catch_each_way_of_opening_the_seam() -> None:
    # So the test below cannot pass by matching nothing.
    for bad in (
        'channel = grpc.aio.insecure_channel("127.0.0.1:50052")',
        "stub = persona_pb2_grpc.PersonaServiceStub(channel)",
        'stub = memory_pb2_grpc.MemoryServiceStub(rt.peers.channel("memory"))',
        "except grpc.aio.AioRpcError as exc:",
    ):
        assert _offences(bad), bad
    for good in (
        "persona = rt.peers.stub(persona_pb2_grpc.PersonaServiceStub)",
        "reply = await persona.GetPersona(request)",
        "except NotFound:",
    ):
        assert not _offences(good), good


def test_no_service_or_lib_calls_a_peer_around_edrs_core() -> None:
    sources = _sources()
    assert any("edrs_gateway" in str(p) for p in sources)  # the scan sees the services
    offences = [
        f"{path.relative_to(ROOT)}:{offence}"
        for path in sources
        for offence in _offences(path.read_text(encoding="utf-8"))
    ]
    assert not offences, "\n".join(offences)
