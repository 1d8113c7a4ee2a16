"""How fleet status is shown: a rich table for people, a JSON list for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.table import Table

from edrs_cli.supervisor import ServiceStatus


def status_table(rows: Sequence[ServiceStatus], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("service", "pid", "gRPC", "HTTP", "metrics", "ready"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.name,
            str(row.pid) if row.pid is not None else "-",
            row.grpc,
            row.http,
            row.metrics,
            "[green]yes[/green]" if row.ready else "[red]no[/red]",
        )
    return table


def status_json(rows: Sequence[ServiceStatus]) -> str:
    """A JSON list of objects with keys name, pid, grpc, http, metrics, ready."""
    return json.dumps([row.to_dict() for row in rows], indent=2)
