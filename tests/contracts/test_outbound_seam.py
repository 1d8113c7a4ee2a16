"""Services call out over HTTP only through `edrs_core.outbound`, so one SSRF policy (checked,
pinned addresses; bounded redirects, size and time) covers every URL a user or tenant can give.
The one exception is the reasoning service's OpenAI-compatible backends (chat, and speech), which
talk to the inference servers the operator configures, never to a URL from a request."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HTTP_CLIENTS = {
    "httpx",
    "httpcore",
    "aiohttp",
    "requests",
    "urllib3",
    "urllib.request",
    "http.client",
}
ALLOWED = {
    ROOT / "services/reasoning/src/edrs_reasoning/backends/openai.py",
    ROOT / "services/reasoning/src/edrs_reasoning/backends/openai_audio.py",
}


def http_client_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in HTTP_CLIENTS or name.split(".", 1)[0] in HTTP_CLIENTS - {"urllib", "http"}:
                found.append(f"{path.relative_to(root)}:{node.lineno}: imports {name}")
    return found


def test_services_call_out_only_through_the_outbound_client() -> None:
    sources = sorted(p for p in ROOT.glob("services/*/src/**/*.py") if p not in ALLOWED)
    assert sources, "no service sources found"
    offences = [o for p in sources for o in http_client_imports(p)]
    assert not offences, "use edrs_core.outbound.OutboundClient:\n" + "\n".join(offences)


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import httpx\nfrom urllib import request\nimport urllib.request as r\n")
    found = http_client_imports(module, tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "imports httpx",
        "imports urllib.request",
        "imports urllib.request",
    ]
