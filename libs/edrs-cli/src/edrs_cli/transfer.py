"""``edrs export`` and ``edrs import``: a tenant's personas, knowledge, workflow definitions and
tasks to an NDJSON file, and such a file into a tenant (docs/integration.md, "Import and export").
A client of `GET /api/v1/export` and `POST /api/v1/import`, with the credentials of ``edrs tasks``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from edrs_cli.gateway_api import DEFAULT_STATE_DIR, ApiKey, StateDir, Token, Url, problem_detail
from edrs_cli.tasks import Json
from edrs_cli.tasks import _api as api
from edrs_cli.tasks import _fail as fail

# An export streams as long as the tenant is large, and an import answers once every record is
# applied: minutes for a large tenant.
TIMEOUT = httpx.Timeout(30.0, read=3600.0, write=600.0)
NDJSON = "application/x-ndjson"
TAIL_BYTES = 1024 * 1024


def export(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The file to write; default: standard output."),
    ] = None,
    kinds: Annotated[
        str, typer.Option("--kinds", help="Comma-separated: personas, documents, workflows, tasks.")
    ] = "personas,documents,workflows,tasks",
    csv: Annotated[
        bool, typer.Option("--csv", help="One tabular kind (personas or tasks) as CSV.")
    ] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Export the tenant (admins). Fails, exit 1, when the export broke off before its footer."""
    params = {"kinds": kinds, "format": "csv" if csv else "ndjson"}
    # The end of the stream, where the footer (or the `error` line of a broken export) is.
    tail = b""
    with api(url, token, api_key, state_dir) as client:
        client.timeout = TIMEOUT
        with client.stream("GET", "/api/v1/export", params=params) as reply:
            if reply.status_code != 200:
                reply.read()
                code = 2 if reply.status_code in (400, 422) else 1
                fail(problem_detail(reply), code)
            sink = output.open("wb") if output else sys.stdout.buffer
            try:
                for chunk in reply.iter_bytes():
                    sink.write(chunk)
                    tail = (tail + chunk)[-TAIL_BYTES:]
            except httpx.HTTPError as exc:
                # The connection broke mid-stream: what was written has no footer.
                fail(f"the export broke off: {exc or type(exc).__name__}", 1)
            finally:
                if output:
                    sink.close()
                else:
                    sink.flush()
    if csv:
        return
    try:
        final = json.loads(tail.strip().rsplit(b"\n", 1)[-1])
    except ValueError:
        final = {}
    if not isinstance(final, dict) or final.get("kind") != "footer":
        data = final.get("data") if isinstance(final, dict) else None
        detail = data.get("detail") if isinstance(data, dict) else None
        fail(f"the export broke off: {detail or 'no footer'}", 1)
    data = final["data"]
    typer.echo(f"exported {data['records']} records", err=True)
    for skipped in data["skipped"]:
        typer.echo(f"skipped {skipped['kind']} {skipped['id']}: {skipped['reason']}", err=True)


def import_file(
    file: Annotated[Path, typer.Argument(help="An export (NDJSON); '-' reads standard input.")],
    lenient: Annotated[
        bool,
        typer.Option("--lenient", help="Import the good lines and list the bad ones as failed."),
    ] = False,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Import an export into the tenant (admins). Exit 2 when a line is invalid (nothing is
    imported), 1 when some records failed (each listed with its line), 0 otherwise."""
    body = sys.stdin.buffer.read() if str(file) == "-" else _read(file)
    with api(url, token, api_key, state_dir) as client:
        client.timeout = TIMEOUT
        reply = client.post(
            "/api/v1/import",
            params={"mode": "lenient" if lenient else "strict"},
            content=body,
            headers={"Content-Type": NDJSON},
        )
        if reply.status_code == 422:
            problem: dict[str, Any] = reply.json()
            for error in problem.get("errors") or []:
                typer.echo(f"{error.get('detail')}", err=True)
            fail(f"nothing imported: {problem.get('detail')}", 2)
        if reply.status_code != 200:
            fail(problem_detail(reply), 2 if reply.status_code in (400, 413, 415) else 1)
    result = reply.json()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"imported {result['imported']}, unchanged {result['unchanged']}, "
            f"failed {len(result['failed'])}"
        )
    for failure in result["failed"]:
        typer.echo(
            f"line {failure['line']} ({failure['kind']}): {failure['code']}: {failure['detail']}",
            err=True,
        )
    if result["failed"]:
        raise typer.Exit(1)


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 2)
        raise  # unreachable: fail exits
