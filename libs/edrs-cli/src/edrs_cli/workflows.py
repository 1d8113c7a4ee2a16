"""``edrs workflows``: register workflows, start, watch, cancel and retry runs, decide approvals,
schedule workflows. A client of the gateway's `/api/v1/workflows`, `/runs`, `/approvals` and
`/schedules` routes (docs/tasks.md), with the credentials and output conventions of `edrs tasks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edrs_cli.gateway_api import DEFAULT_STATE_DIR, ApiKey, StateDir, Token, Url
from edrs_cli.tasks import (
    Json,
    _api,
    _check,
    _Failed,
    _print,
    _table,
)

app = typer.Typer(
    help="Durable workflows: definitions, runs (watch live), approvals and schedules.",
    no_args_is_help=True,
)

RUN_STATUSES = ("running", "waiting_for_approval", "succeeded", "failed", "cancelled")


def _json_option(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter(f"{what} must be a JSON object")
    return parsed


def _every_page(api: Any, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = _check(api.get(path, params={**params, "pageToken": token}))
        found += page[key]
        token = page["nextPageToken"]
        if not token:
            return found


def _runs_table(runs: list[dict[str, Any]]) -> Table:
    table = _table("id", "workflow", "status", "attempt", "created", "error")
    for r in runs:
        table.add_row(
            r["id"],
            f"{r['workflowName']}@{r['workflowVersion']}",
            r["status"],
            str(r["attempt"]),
            r["createdAt"],
            r["error"],
        )
    return table


def _run_table(run: dict[str, Any]) -> Table:
    table = _table("step", "type", "status", "attempts", "error / approval")
    for s in run["steps"]:
        table.add_row(
            s["id"], s["type"], s["status"], str(s["attempts"]), s["error"] or s["approvalId"] or ""
        )
    table.title = (
        f"run {run['id']} ({run['workflowName']}@{run['workflowVersion']}): {run['status']}"
    )
    return table


# -- definitions ----------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The workflow's name (a new version if it exists).")],
    spec_file: Annotated[
        Path, typer.Option("--file", "-f", help='The definition, JSON: {"steps": [...]}.')
    ],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Register a workflow definition (docs/tasks.md, "Workflow definitions")."""
    spec = _json_option(spec_file.read_text(), str(spec_file))
    with _api(url, token, api_key, state_dir) as api:
        created = _check(
            api.post(
                "/api/v1/workflows",
                json={"name": name, "description": description, "spec": spec},
            ),
            201,
        )
    if as_json:
        typer.echo(json.dumps(created, indent=2))
    else:
        typer.echo(f"workflow {created['name']} version {created['version']}")


@app.command("list")
def list_workflows(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's workflows (latest versions)."""
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, "/api/v1/workflows", "workflows", {})

    def table(rows: list[dict[str, Any]]) -> Table:
        t = _table("name", "version", "steps", "description")
        for w in rows:
            t.add_row(w["name"], str(w["version"]), str(len(w["spec"]["steps"])), w["description"])
        return t

    _print(found, as_json, table)


# -- runs -----------------------------------------------------------------------------------


@app.command("start")
def start(
    name: Annotated[str, typer.Argument(help="The workflow to run.")],
    input_json: Annotated[
        str | None, typer.Option("--input", "-i", help="The run's input, a JSON object.")
    ] = None,
    version: Annotated[int, typer.Option("--version", min=0, help="0: the latest.")] = 0,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Repeating the command with it starts nothing new."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the run until it ends.")
    ] = False,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Start a run; prints its id (or follows it with --watch)."""
    body = {
        "workflowName": name,
        "workflowVersion": version,
        "input": _json_option(input_json, "--input"),
    }
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _api(url, token, api_key, state_dir) as api:
        run = _check(api.post("/api/v1/runs", json=body, headers=headers), 201)
        if watch:
            run = _follow(api, run["id"], as_json)
    if as_json and not watch:
        typer.echo(json.dumps(run, indent=2))
    elif not watch:
        typer.echo(f"run {run['id']} {run['status']}")
    if watch and run["status"] != "succeeded":
        raise typer.Exit(1)


def _follow(api: Any, run_id: str, as_json: bool) -> dict[str, Any]:
    """Prints each step change of the run as it happens; returns the finished run."""
    with api.stream("GET", f"/api/v1/runs/{run_id}/events", timeout=None) as response:
        if response.status_code != 200:
            response.read()
            _check(response)
        event, data = "", ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = line.removeprefix("data:").strip()
            elif not line and event:
                payload = json.loads(data)
                if event == "error":
                    raise _Failed(f"watch failed: {payload.get('detail')}", 1)
                if as_json:
                    typer.echo(json.dumps({"event": event, "data": payload}))
                elif event == "step":
                    extra = payload["error"] or (
                        f"approval {payload['approvalId']}" if payload["approvalId"] else ""
                    )
                    typer.echo(f"{payload['id']:<20} {payload['status']:<22} {extra}".rstrip())
                else:
                    typer.echo(
                        f"run {payload['id']} {payload['status']} {payload['error']}".rstrip()
                    )
                if event == "finished":
                    finished: dict[str, Any] = payload
                    return finished
                event, data = "", ""
    raise _Failed(f"the watch of run {run_id} ended before the run did", 1)


@app.command("runs")
def list_runs(
    workflow: Annotated[
        str | None, typer.Option("--workflow", help="Runs of this workflow.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help=f"One of {', '.join(RUN_STATUSES)}.")
    ] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's runs, newest first (every page)."""
    params: dict[str, Any] = {}
    if workflow:
        params["workflowName"] = workflow
    if status:
        params["status"] = status
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, "/api/v1/runs", "runs", params)
    _print(found, as_json, _runs_table)


@app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A run with its steps."""
    with _api(url, token, api_key, state_dir) as api:
        run = _check(api.get(f"/api/v1/runs/{run_id}"))
    _print(run, as_json, _run_table)


@app.command("watch")
def watch_run(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Follow a run's steps live until it ends (exit 1 unless it succeeded)."""
    with _api(url, token, api_key, state_dir) as api:
        run = _follow(api, run_id, as_json)
    if run["status"] != "succeeded":
        raise typer.Exit(1)


def _run_action(
    action: str, run_id: str, url: Any, token: Any, api_key: Any, state_dir: Path
) -> None:
    with _api(url, token, api_key, state_dir) as api:
        run = _check(api.post(f"/api/v1/runs/{run_id}/{action}"))
    typer.echo(f"run {run['id']} {run['status']} (attempt {run['attempt']})")


@app.command("cancel")
def cancel_run(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Cancel a run (its completed steps are compensated)."""
    _run_action("cancel", run_id, url, token, api_key, state_dir)


@app.command("retry")
def retry_run(
    run_id: Annotated[str, typer.Argument(help="A failed run.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Run a failed run again from its failed step."""
    _run_action("retry", run_id, url, token, api_key, state_dir)


# -- approvals ------------------------------------------------------------------------------


@app.command("approvals")
def list_approvals(
    everyone: Annotated[
        bool, typer.Option("--all", help="Every approval, not only those for your role.")
    ] = False,
    status: Annotated[
        str, typer.Option("--status", "-s", help="pending, approved, rejected, expired.")
    ] = "pending",
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """What waits for your decision (pending, for your role, by default)."""
    params: dict[str, Any] = {"status": status, "forMe": str(not everyone).lower()}
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, "/api/v1/approvals", "approvals", params)

    def table(rows: list[dict[str, Any]]) -> Table:
        t = _table("id", "role", "status", "title", "expires", "run")
        for a in rows:
            t.add_row(a["id"], a["role"], a["status"], a["title"], a["expiresAt"], a["runId"] or "")
        return t

    _print(found, as_json, table)


def _decide(
    approval_id: str,
    approve: bool,
    comment: str,
    url: Any,
    token: Any,
    api_key: Any,
    state_dir: Path,
) -> None:
    with _api(url, token, api_key, state_dir) as api:
        decided = _check(
            api.post(
                f"/api/v1/approvals/{approval_id}/decision",
                json={"approve": approve, "comment": comment},
            )
        )
    typer.echo(f"approval {decided['id']} {decided['status']}")


Comment = Annotated[str, typer.Option("--comment", "-m", help="Why.")]


@app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval.")],
    comment: Comment = "",
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Approve: the waiting work goes on."""
    _decide(approval_id, True, comment, url, token, api_key, state_dir)


@app.command("reject")
def reject(
    approval_id: Annotated[str, typer.Argument(help="The approval.")],
    comment: Comment = "",
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Reject: the waiting step fails (and its run compensates)."""
    _decide(approval_id, False, comment, url, token, api_key, state_dir)


# -- schedules ------------------------------------------------------------------------------


@app.command("schedule")
def schedule(
    name: Annotated[str, typer.Argument(help="The workflow to run.")],
    cron: Annotated[str, typer.Option("--cron", help='e.g. "0 9 * * 1-5"')],
    zone: Annotated[str, typer.Option("--tz", help="IANA time zone.")] = "UTC",
    input_json: Annotated[str | None, typer.Option("--input", "-i")] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Run a workflow at the times of a cron expression in a time zone."""
    body = {
        "workflowName": name,
        "cron": cron,
        "timeZone": zone,
        "input": _json_option(input_json, "--input"),
    }
    with _api(url, token, api_key, state_dir) as api:
        created = _check(api.post("/api/v1/schedules", json=body), 201)
    if as_json:
        typer.echo(json.dumps(created, indent=2))
    else:
        typer.echo(f"schedule {created['id']}; next: {', '.join(created['nextRunTimes'][:3])}")


@app.command("schedules")
def list_schedules(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's schedules with their next run time."""
    with _api(url, token, api_key, state_dir) as api:
        found = _every_page(api, "/api/v1/schedules", "schedules", {})

    def table(rows: list[dict[str, Any]]) -> Table:
        t = _table("id", "workflow", "cron", "zone", "paused", "next")
        for s in rows:
            nxt = s["nextRunTimes"][0] if s["nextRunTimes"] else ""
            t.add_row(s["id"], s["workflowName"], s["cron"], s["timeZone"], str(s["paused"]), nxt)
        return t

    _print(found, as_json, table)


def _schedule_action(
    schedule_id: str, action: str, url: Any, token: Any, api_key: Any, state_dir: Path
) -> None:
    with _api(url, token, api_key, state_dir) as api:
        if action == "delete":
            _check(api.delete(f"/api/v1/schedules/{schedule_id}"), 204)
            typer.echo(f"schedule {schedule_id} deleted")
            return
        changed = _check(api.post(f"/api/v1/schedules/{schedule_id}/{action}"))
    typer.echo(f"schedule {changed['id']} {'paused' if changed['paused'] else 'active'}")


@app.command("pause")
def pause(
    schedule_id: Annotated[str, typer.Argument(help="The schedule.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Pause a schedule."""
    _schedule_action(schedule_id, "pause", url, token, api_key, state_dir)


@app.command("resume")
def resume(
    schedule_id: Annotated[str, typer.Argument(help="The schedule.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Resume a paused schedule."""
    _schedule_action(schedule_id, "resume", url, token, api_key, state_dir)


@app.command("unschedule")
def unschedule(
    schedule_id: Annotated[str, typer.Argument(help="The schedule.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete a schedule."""
    _schedule_action(schedule_id, "delete", url, token, api_key, state_dir)
