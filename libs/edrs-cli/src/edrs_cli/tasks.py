"""``edrs tasks``: create, list, show, cancel and decompose tasks; read and set budgets; read usage.

A client of the gateway's `/api/v1/tasks`, `/api/v1/budgets` and `/api/v1/usage` routes like any
other; credentials as every `edrs` command that talks to the API (`edrs_cli.gateway_api`).
`--json` prints the API's JSON instead of a table, for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from edrs_cli.gateway_api import (
    DEFAULT_STATE_DIR,
    ApiKey,
    GatewayApiError,
    StateDir,
    Token,
    Url,
    access_token,
    gateway_url,
    problem_detail,
)

app = typer.Typer(
    help="Tasks for personas: create, list, show, cancel, decompose; budgets and usage.",
    no_args_is_help=True,
)

# Decomposition waits for the model; everything else is quick.
TIMEOUT = httpx.Timeout(30.0, read=330.0)
STATUSES = ("queued", "running", "waiting_for_approval", "succeeded", "failed", "cancelled")

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


class _Failed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def _api(
    url: str | None, token: str | None, api_key: str | None, state_dir: Path
) -> Iterator[httpx.Client]:
    """An authenticated client; any failure ends the command with its one-line reason (exit 2 for
    a request the gateway found invalid, 1 otherwise)."""
    base = gateway_url(url, state_dir)
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            client.headers["Authorization"] = f"Bearer {access_token(client, token, api_key)}"
            yield client
    except GatewayApiError as exc:
        _fail(str(exc), exc.code)
    except _Failed as exc:
        _fail(str(exc), exc.code)
    except httpx.TransportError as exc:
        _fail(f"cannot reach the gateway at {base}: {exc}", 1)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check(reply: httpx.Response, *expected: int) -> Any:
    if reply.status_code in (expected or (200,)):
        return reply.json() if reply.content else None
    detail = problem_detail(reply)
    if reply.status_code == 401:
        detail = f"authentication failed: {detail}"
    raise _Failed(detail, 2 if reply.status_code in (400, 404, 409, 422) else 1)


def _print(data: Any, as_json: bool, table: Callable[[Any], Table]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            # Piped (to grep, a file): rich would cut to 80 columns, and ids with it.
            console = Console(width=200)
        console.print(table(data))


def _table(*columns: str) -> Table:
    """Ids are copied from the output into the next command: never wrapped or cut."""
    table = Table()
    for name in columns:
        table.add_column(name, no_wrap=name in ("id", "assignee", "persona"))
    return table


def _tasks_table(tasks: list[dict[str, Any]]) -> Table:
    table = _table("id", "status", "priority", "title", "assignee", "due", "reason")
    for t in tasks:
        table.add_row(
            t["id"],
            t["status"],
            str(t["priority"]),
            t["title"],
            t["assigneePersonaId"] or "",
            t["dueAt"] or "",
            t["assignmentReason"],
        )
    return table


def _task_table(task: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    for key in (
        "id",
        "title",
        "description",
        "status",
        "priority",
        "assigneePersonaId",
        "dueAt",
        "workflowRunId",
        "parentTaskId",
        "stepType",
        "assignmentReason",
        "outcome",
    ):
        value = task.get(key)
        if value not in (None, ""):
            table.add_row(key, str(value))
    for entry in task.get("timeline", []):
        moved = f"{entry['fromStatus'] or ''} → {entry['toStatus']}" if entry["toStatus"] else ""
        table.add_row(
            entry["createdAt"], " ".join(p for p in (entry["kind"], moved, entry["note"]) if p)
        )
    return table


@app.command("list")
def list_tasks(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help=f"Only these statuses: {', '.join(STATUSES)}."),
    ] = None,
    persona: Annotated[str | None, typer.Option("--persona", help="Assignee persona id.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", min=1, max=5)] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Subtasks of this task.")] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List the tenant's tasks, oldest first (every page)."""
    params: dict[str, Any] = {"status": status or []}
    if persona:
        params["assigneePersonaId"] = persona
    if priority:
        params["priority"] = priority
    if parent:
        params["parentTaskId"] = parent
    found: list[dict[str, Any]] = []
    with _api(url, token, api_key, state_dir) as api:
        while True:
            page = _check(api.get("/api/v1/tasks", params=params))
            found += page["tasks"]
            if not page["nextPageToken"]:
                break
            params["pageToken"] = page["nextPageToken"]
    _print(found, as_json, _tasks_table)


@app.command("create")
def create_task(
    title: Annotated[str, typer.Argument(help="What is to be done, in a line.")],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    persona: Annotated[str | None, typer.Option("--persona", help="Assignee persona id.")] = None,
    priority: Annotated[int, typer.Option("--priority", min=1, max=5)] = 3,
    due: Annotated[
        str | None, typer.Option("--due", help="RFC 3339 time, e.g. 2031-01-02T09:00:00Z.")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=0, help="Budget: tokens.")] = 0,
    max_tool_calls: Annotated[int, typer.Option("--max-tool-calls", min=0)] = 0,
    max_cost_micros: Annotated[
        int, typer.Option("--max-cost-micros", min=0, help="Budget: millionths of a US dollar.")
    ] = 0,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a queued task."""
    body: dict[str, Any] = {"title": title, "description": description, "priority": priority}
    if persona:
        body["assigneePersonaId"] = persona
    if due:
        body["dueAt"] = due
    if max_tokens or max_tool_calls or max_cost_micros:
        body["budget"] = {
            "maxTokens": max_tokens,
            "maxToolCalls": max_tool_calls,
            "maxCostMicros": max_cost_micros,
        }
    with _api(url, token, api_key, state_dir) as api:
        task = _check(api.post("/api/v1/tasks", json=body), 201)
    _print(task, as_json, _task_table)


@app.command("show")
def show_task(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A task and its timeline."""
    with _api(url, token, api_key, state_dir) as api:
        task = _check(api.get(f"/api/v1/tasks/{task_id}"))
        entries: list[dict[str, Any]] = []
        params: dict[str, str] = {}
        while True:
            page = _check(api.get(f"/api/v1/tasks/{task_id}/timeline", params=params))
            entries += page["entries"]
            if not page["nextPageToken"]:
                break
            params["pageToken"] = page["nextPageToken"]
    _print({**task, "timeline": entries}, as_json, _task_table)


@app.command("cancel")
def cancel_task(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    reason: Annotated[str, typer.Option("--reason", help="Kept on the timeline.")] = "",
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Cancel a task that has not finished."""
    with _api(url, token, api_key, state_dir) as api:
        task = _check(api.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": reason}))
    _print(task, as_json, _task_table)


@app.command("decompose")
def decompose_task(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    max_subtasks: Annotated[int, typer.Option("--max-subtasks", min=1, max=20)] = 8,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Have the model break a task into subtasks, assigned to personas by skill (with why)."""
    with _api(url, token, api_key, state_dir) as api:
        reply = _check(
            api.post(f"/api/v1/tasks/{task_id}/decompose", json={"maxSubtasks": max_subtasks})
        )
    _print(reply["subtasks"], as_json, _tasks_table)


@app.command("budgets")
def list_budgets(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List the tenant's budgets with what each used and holds."""
    found: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    with _api(url, token, api_key, state_dir) as api:
        while True:
            page = _check(api.get("/api/v1/budgets", params=params))
            found += page["budgets"]
            if not page["nextPageToken"]:
                break
            params["pageToken"] = page["nextPageToken"]

    def table(budgets: list[dict[str, Any]]) -> Table:
        out = _table(
            "id", "scope", "period", "tokens used/max", "tool calls used/max", "cost µ$ used/max"
        )
        for b in budgets:
            out.add_row(
                b["id"],
                f"{b['scope']} {b['scopeId']}".strip(),
                b["period"] if b["period"] == "none" else f"{b['period']} to {b['periodEnd']}",
                f"{b['used']['tokens']}/{b['maxTokens'] or '∞'}",
                f"{b['used']['toolCalls']}/{b['maxToolCalls'] or '∞'}",
                f"{b['used']['costMicros']}/{b['maxCostMicros'] or '∞'}",
            )
        return out

    _print(found, as_json, table)


@app.command("set-budget")
def set_budget(
    scope: Annotated[str, typer.Argument(help="tenant, persona or run.")],
    scope_id: Annotated[str, typer.Argument(help="The persona or run id; none for tenant.")] = "",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=0)] = 0,
    max_tool_calls: Annotated[int, typer.Option("--max-tool-calls", min=0)] = 0,
    max_cost_micros: Annotated[int, typer.Option("--max-cost-micros", min=0)] = 0,
    approval: Annotated[
        bool, typer.Option("--approval", help="Over the budget: ask for approval, not refuse.")
    ] = False,
    period: Annotated[
        str,
        typer.Option("--period", help="Start afresh every day, week or month; none: a total."),
    ] = "none",
    time_zone: Annotated[
        str, typer.Option("--time-zone", help="IANA zone of the period's midnight.")
    ] = "UTC",
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create or replace the budget of a scope (admins)."""
    body = {
        "scope": scope,
        "scopeId": scope_id,
        "maxTokens": max_tokens,
        "maxToolCalls": max_tool_calls,
        "maxCostMicros": max_cost_micros,
        "onExceed": "approval" if approval else "refuse",
        "period": period,
        "timeZone": time_zone,
    }
    with _api(url, token, api_key, state_dir) as api:
        budget = _check(api.put("/api/v1/budgets", json=body))
    typer.echo(json.dumps(budget, indent=2) if as_json else f"budget {budget['id']} set")


@app.command("usage")
def usage(
    from_day: Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD.")] = None,
    to_day: Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD.")] = None,
    persona: Annotated[str | None, typer.Option("--persona", help="Persona id.")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """What the tenant used per day, persona and model (default: the last 30 days)."""
    params = {
        k: v
        for k, v in (("from", from_day), ("to", to_day), ("personaId", persona), ("model", model))
        if v
    }
    with _api(url, token, api_key, state_dir) as api:
        rows = _check(api.get("/api/v1/usage", params=params))["rows"]

    def table(found: list[dict[str, Any]]) -> Table:
        out = _table("day", "persona", "model", "calls", "prompt", "completion", "tools", "cost µ$")
        for r in found:
            out.add_row(
                r["day"],
                r["personaId"],
                r["model"],
                *(
                    str(r[k])
                    for k in (
                        "calls",
                        "promptTokens",
                        "completionTokens",
                        "toolCalls",
                        "costMicros",
                    )
                ),
            )
        return out

    _print(rows, as_json, table)
