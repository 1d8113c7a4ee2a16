"""``edrs research``: ask a question and watch the research job live, then read its report; list,
show, watch and cancel jobs; download reports; manage sources. A client of the gateway's
`/api/v1/research` routes (docs/research.md), with the credentials and output conventions of
`edrs tasks`.

`edrs research "question"` is `edrs research ask "question"`: any first word that is not one of
the group's commands starts a job.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from edrs_cli.gateway_api import DEFAULT_STATE_DIR, ApiKey, StateDir, Token, Url
from edrs_cli.tasks import Json, _api, _check, _Failed, _print, _table

API = "/api/v1/research"
JOB_STATES = (
    "queued", "planning", "searching", "fetching", "scoring", "drafting", "completed", "failed",
    "cancelled",
)  # fmt: skip
END_STATES = ("completed", "failed", "cancelled")
FORMATS = ("markdown", "html", "pdf")
# Steps worth a line of their own while a job runs (the rest move the progress line).
_SHOWN = ("plan", "query", "fetched", "refused", "duplicate", "state")


class _AskByDefault(TyperGroup):
    """`edrs research "question" ...` runs `ask`: a first argument that names no command (and is
    no option of the group's, like --help) is the question."""

    # `ctx` is the click Context typer bundles (typer._click, private): typed loosely.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["ask", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_AskByDefault,
    help='Research: `edrs research "question"` starts a job, shows its progress live and prints '
    "its report; jobs, reports and sources.",
    no_args_is_help=True,
)
sources = typer.Typer(
    help="Sources: register, list, pin, block, re-fetch, delete.", no_args_is_help=True
)
app.add_typer(sources, name="sources")


def _console(err: bool = False) -> Console:
    console = Console(stderr=err)
    # Piped: rich would cut to 80 columns, and URLs with it.
    return console if console.is_terminal else Console(stderr=err, width=200)


def _every_page(api: httpx.Client, path: str, key: str, params: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = _check(api.get(path, params={**params, "pageToken": token}))
        found += page[key]
        token = page["nextPageToken"]
        if not token:
            return found


# -- jobs -------------------------------------------------------------------------------------


def _counts(job: dict[str, Any]) -> str:
    p = job["progress"]
    parts = [
        f"{p['queries']} queries",
        f"{p['sourcesFound']} found",
        f"{p['sourcesFetched']} fetched",
    ]
    if p["sourcesRefused"]:
        parts.append(f"{p['sourcesRefused']} refused")
    if p["sourcesDuplicate"]:
        parts.append(f"{p['sourcesDuplicate']} duplicate")
    if p["claims"]:
        parts.append(f"{p['claimsSupported']}/{p['claims']} claims supported")
    return ", ".join(parts)


def _jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = _table("id", "state", "question", "progress", "created")
    for j in jobs:
        table.add_row(j["id"], j["state"], j["question"], _counts(j), j["createdAt"])
    return table


def _job_table(job: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    scope = job["scope"]
    rows = {
        "id": job["id"],
        "question": job["question"],
        "state": job["state"],
        "error": job["error"],
        "collections": ", ".join(scope["collections"]),
        "web": "yes" if scope["web"] else "no",
        "allowed domains": ", ".join(scope["allowedDomains"]),
        "denied domains": ", ".join(scope["deniedDomains"]),
        "planner": job["planner"],
        "progress": _counts(job),
        "tokens used": str(job["progress"]["tokensUsed"]),
        "persona": job["personaId"],
        "task": job["taskId"],
        "created": job["createdAt"],
        "ended": job["endedAt"] or "",
    }
    for key, value in rows.items():
        if value:
            table.add_row(key, value)
    for i, step in enumerate(job["plan"], 1):
        table.add_row(f"plan {i}", f"{step['subQuestion']}\n  " + "\n  ".join(step["queries"]))
    return table


def _events(api: httpx.Client, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's server-sent events, (event, data), until the stream ends."""
    with api.stream("GET", f"{API}/jobs/{job_id}/events", timeout=None) as response:
        if response.status_code != 200:
            response.read()
            _check(response)
        event, data = "", ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data += line.removeprefix("data:").strip()
            elif not line and event:
                yield event, json.loads(data)
                event, data = "", ""


def _follow(api: httpx.Client, job_id: str, as_json: bool) -> dict[str, Any]:
    """Shows the job's steps live (a progress line, and a line per plan, query, page fetched or
    refused); returns the ended job."""
    if as_json:
        for event, data in _events(api, job_id):
            typer.echo(json.dumps({"event": event, "data": data}))
            if event == "error":
                raise _Failed(f"watch failed: {data.get('detail')}", 1)
            if event == "ended":
                ended: dict[str, Any] = data["job"]
                return ended
        raise _Failed(f"the watch of job {job_id} ended before the job did", 1)
    console = _console(err=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[state]:<10}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("starting", total=None, state="queued")
        for event, data in _events(api, job_id):
            if event == "error":
                raise _Failed(f"watch failed: {data.get('detail')}", 1)
            job = data["job"]
            progress.update(bar, description=_counts(job), state=job["state"])
            kind = data["kind"]
            if kind == "plan":
                for step in job["plan"]:
                    progress.console.print(f"  plan: {step['subQuestion']}", markup=False)
            elif kind in _SHOWN and data["detail"]:
                progress.console.print(f"  {kind}: {data['detail']}", markup=False)
            if event == "ended":
                ended = job
                break
        else:
            raise _Failed(f"the watch of job {job_id} ended before the job did", 1)
    console.print(f"job {ended['id']} {ended['state']}: {_counts(ended)}", markup=False)
    return ended


def _export(api: httpx.Client, job_id: str, fmt: str) -> bytes:
    reply = api.get(f"{API}/jobs/{job_id}/export", params={"format": fmt})
    if reply.status_code != 200:
        _check(reply)
    return reply.content


def _show_report(api: httpx.Client, job_id: str, fmt: str, output: Path | None) -> None:
    """The report written to `output`, or printed (Markdown, rendered on a terminal)."""
    if fmt == "json":
        report = _check(api.get(f"{API}/jobs/{job_id}/report"))
        content = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    else:
        content = _export(api, job_id, fmt)
    if output is not None:
        try:
            output.write_bytes(content)
        except OSError as exc:
            raise _Failed(f"cannot write {output}: {exc}", 1) from None
        typer.echo(f"report written to {output} ({len(content):,} bytes)")
        return
    if fmt == "pdf":
        raise _Failed("a PDF goes to a file: add --output FILE", 2)
    console = Console()
    if fmt == "markdown" and console.is_terminal:
        console.print(Markdown(content.decode("utf-8")))
    else:
        sys.stdout.write(content.decode("utf-8"))
        sys.stdout.flush()


def _check_format(fmt: str, *, json_too: bool) -> str:
    allowed = (*FORMATS, "json") if json_too else FORMATS
    if fmt not in allowed:
        raise typer.BadParameter(f"one of {', '.join(allowed)}", param_hint="--format")
    return fmt


Format = Annotated[
    str,
    typer.Option("--format", "-f", help="markdown (default), html, pdf (needs --output), or json."),
]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the report to this file.", dir_okay=False),
]


@app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="The question (3-2,000 characters).")],
    collections: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="A knowledge collection to search (repeatable)."),
    ] = None,
    web: Annotated[
        bool | None,
        typer.Option(
            "--web/--no-web",
            help="Search the web. Default: only when no --collection is given.",
            show_default=False,
        ),
    ] = None,
    domains: Annotated[
        list[str] | None,
        typer.Option("--domain", help="Only this domain (host or *.suffix; repeatable)."),
    ] = None,
    denied: Annotated[
        list[str] | None,
        typer.Option("--deny", help="Never this domain (host or *.suffix; repeatable)."),
    ] = None,
    recency_days: Annotated[
        int, typer.Option("--recency-days", min=0, help="Only pages of the last N days; 0: any.")
    ] = 0,
    depth: Annotated[
        int, typer.Option("--depth", min=0, max=3, help="Rounds of sub-questions (1-3); 0: 1.")
    ] = 0,
    max_sources: Annotated[
        int, typer.Option("--max-sources", min=0, max=50, help="Most sources to read; 0: 10.")
    ] = 0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=0, help="Most model tokens to spend; 0: 4,000.")
    ] = 0,
    persona: Annotated[
        str | None,
        typer.Option("--persona", help="The persona doing the research (its budgets apply)."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start the job and print its id only.")
    ] = False,
    fmt: Format = "markdown",
    output: Output = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Start a research job, show its progress live, then print its report (exit 1 when the job
    fails or is cancelled)."""
    _check_format(fmt, json_too=True)
    scope: dict[str, Any] = {
        "collections": collections or [],
        "web": (not collections) if web is None else web,
        "allowedDomains": domains or [],
        "deniedDomains": denied or [],
        "recencyDays": recency_days,
        "depth": depth,
        "maxSources": max_sources,
        "maxTokens": max_tokens,
    }
    body: dict[str, Any] = {"question": question, "scope": scope}
    if persona:
        body["personaId"] = persona
    with _api(url, token, api_key, state_dir) as api:
        job = _check(api.post(f"{API}/jobs", json=body), 201)
        if detach:
            typer.echo(json.dumps(job, indent=2) if as_json else f"job {job['id']} {job['state']}")
            return
        if not as_json:
            _console(err=True).print(f"job {job['id']} started", markup=False)
        job = _follow(api, job["id"], as_json)
        if job["state"] == "completed":
            if as_json and output is None:
                # One more JSON line after the events: the report.
                found = _check(api.get(f"{API}/jobs/{job['id']}/report"))
                typer.echo(json.dumps({"event": "report", "data": found}))
            else:
                _show_report(api, job["id"], fmt, output)
    if job["state"] != "completed":
        reason = f": {job['error']}" if job["error"] else ""
        typer.echo(f"job {job['id']} {job['state']}{reason}", err=True)
        raise typer.Exit(1)


@app.command("jobs")
def list_jobs(
    state: Annotated[
        str | None, typer.Option("--state", "-s", help=f"One of {', '.join(JOB_STATES)}.")
    ] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's research jobs, newest first (every page)."""
    params = {"state": state} if state else {}
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, f"{API}/jobs", "jobs", params)
    _print(found, as_json, _jobs_table)


JobArg = Annotated[str, typer.Argument(help="The job's id.")]


@app.command("job")
def show_job(
    job_id: JobArg,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A job with its plan and progress."""
    with _api(url, token, api_key, state_dir) as api:
        job = _check(api.get(f"{API}/jobs/{job_id}"))
    _print(job, as_json, _job_table)


@app.command("watch")
def watch_job(
    job_id: JobArg,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Follow a job live until it ends (exit 1 unless it completed)."""
    with _api(url, token, api_key, state_dir) as api:
        job = _follow(api, job_id, as_json)
    if job["state"] != "completed":
        raise typer.Exit(1)


@app.command("cancel")
def cancel_job(
    job_id: JobArg,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Cancel a job that has not ended."""
    with _api(url, token, api_key, state_dir) as api:
        job = _check(api.post(f"{API}/jobs/{job_id}/cancel"))
    typer.echo(f"job {job['id']} {job['state']}")


@app.command("report")
def report(
    job_id: JobArg,
    fmt: Format = "markdown",
    output: Output = None,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A completed job's report: printed, or written to --output (markdown, html, pdf, json)."""
    _check_format(fmt, json_too=True)
    with _api(url, token, api_key, state_dir) as api:
        _show_report(api, job_id, fmt, output)


# -- sources ----------------------------------------------------------------------------------


def _sources_table(found: list[dict[str, Any]]) -> Table:
    table = _table("id", "state", "credibility", "pinned", "url", "title")
    for s in found:
        flag = "pinned" if s["pinned"] else "blocked" if s["blocked"] else ""
        state = s["state"] + (f" ({s['fetchError']})" if s["fetchError"] else "")
        table.add_row(s["id"], state, f"{s['credibility']:.2f}", flag, s["url"], s["title"])
    return table


def _source_table(s: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    for key in (
        "id", "url", "title", "domain", "state", "fetchError", "author", "publishedAt",
        "language", "fetchedAt", "contentHash", "documentId", "createdAt",
    ):  # fmt: skip
        if s.get(key):
            table.add_row(key, str(s[key]))
    for key in ("truncated", "pinned", "blocked"):
        if s[key]:
            table.add_row(key, "yes")
    table.add_row("credibility", f"{s['credibility']:.2f}")
    for r in s["reasons"]:
        table.add_row(f"  {r['signal']}", f"{r['weight']:+.2f}  {r['detail']}")
    return table


SourceArg = Annotated[str, typer.Argument(help="The source's id.")]


@sources.command("list")
def list_sources(
    domain: Annotated[str | None, typer.Option("--domain", help="Only this host.")] = None,
    pinned: Annotated[bool, typer.Option("--pinned", help="Only pinned sources.")] = False,
    blocked: Annotated[bool, typer.Option("--blocked", help="Only blocked sources.")] = False,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's sources, newest first (every page)."""
    params: dict[str, Any] = {}
    if domain:
        params["domain"] = domain
    if pinned:
        params["pinned"] = "true"
    if blocked:
        params["blocked"] = "true"
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, f"{API}/sources", "sources", params)
    _print(found, as_json, _sources_table)


@sources.command("add")
def add_source(
    source_url: Annotated[str, typer.Argument(metavar="URL", help="http or https.")],
    title: Annotated[str, typer.Option("--title", help="Empty: the page's.")] = "",
    pin: Annotated[bool, typer.Option("--pin", help="Trusted.")] = False,
    block: Annotated[bool, typer.Option("--block", help="Never fetched or cited.")] = False,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Register a source: fetched, extracted and scored at once (a page that cannot be fetched is
    registered `failed`, with why; exit 1)."""
    body = {"url": source_url, "title": title, "pinned": pin, "blocked": block}
    with _api(url, token, api_key, state_dir) as api:
        found = _check(api.post(f"{API}/sources", json=body), 201)
    _print(found, as_json, _source_table)
    if found["state"] == "failed":
        raise typer.Exit(1)


@sources.command("show")
def show_source(
    source_id: SourceArg,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A source with its metadata and the reasons of its credibility."""
    with _api(url, token, api_key, state_dir) as api:
        found = _check(api.get(f"{API}/sources/{source_id}"))
    _print(found, as_json, _source_table)


@sources.command("update")
def update_source(
    source_id: SourceArg,
    title: Annotated[str | None, typer.Option("--title", help="A new title.")] = None,
    pin: Annotated[
        bool | None,
        typer.Option("--pin/--unpin", help="Trust it, or no longer.", show_default=False),
    ] = None,
    block: Annotated[
        bool | None,
        typer.Option("--block/--unblock", help="Block it, or no longer.", show_default=False),
    ] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Rename, pin or block a source (it is scored again)."""
    body: dict[str, Any] = {}
    if title is not None:
        body["title"] = title
    if pin is not None:
        body["pinned"] = pin
    if block is not None:
        body["blocked"] = block
    if not body:
        raise typer.BadParameter("give --title, --pin/--unpin or --block/--unblock")
    with _api(url, token, api_key, state_dir) as api:
        found = _check(api.patch(f"{API}/sources/{source_id}", json=body))
    _print(found, as_json, _source_table)


@sources.command("refetch")
def refetch_source(
    source_id: SourceArg,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Fetch a source again now."""
    with _api(url, token, api_key, state_dir) as api:
        found = _check(api.post(f"{API}/sources/{source_id}/refetch"))
    _print(found, as_json, _source_table)


@sources.command("delete")
def delete_source(
    source_id: SourceArg,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete a source and its text (reports keep the passages they cited)."""
    with _api(url, token, api_key, state_dir) as api:
        _check(api.delete(f"{API}/sources/{source_id}"), 204)
    typer.echo(f"deleted source {source_id}")
