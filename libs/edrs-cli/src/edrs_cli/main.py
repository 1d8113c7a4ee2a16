"""The ``edrs`` command: one root app; each command group lives in its own module."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from edrs_events import cli as events_cli

from edrs_cli import (
    admin,
    chat,
    dev,
    integrations,
    knowledge,
    research,
    tasks,
    tools,
    transfer,
    workflows,
)
from edrs_cli.supervisor import Fleet

app = typer.Typer(
    name="edrs",
    help="EDRS developer and operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# New groups (`edrs events ...`, `edrs admin ...`) are one add_typer line each.
app.add_typer(dev.app, name="dev")
app.add_typer(events_cli.app, name="events")
app.add_typer(admin.app, name="admin")
app.add_typer(tasks.app, name="tasks")
app.add_typer(tools.app, name="tools")
app.add_typer(workflows.app, name="workflows")
app.add_typer(knowledge.app, name="knowledge")
app.add_typer(research.app, name="research")
app.add_typer(integrations.connectors, name="connectors")
app.add_typer(integrations.webhooks, name="webhooks")
app.command("chat")(chat.chat)
app.command("export")(transfer.export)
app.command("import")(transfer.import_file)


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Point `edrs events` at the local fleet's bus unless a URL was given."""
    given = "EDRS_BUS_URL" in os.environ or "EDRS_NATS_URL" in os.environ
    if ctx.invoked_subcommand == "events" and not given:
        state_dir = Path(os.environ.get("EDRS_STATE_DIR", dev.DEFAULT_STATE_DIR))
        state = Fleet(state_dir).read_state() or {}
        url = state.get("engines", {}).get("nats", {}).get("url")
        if url:
            # The events group reads its default from this variable (its --bus-url envvar).
            os.environ["EDRS_BUS_URL"] = url


if __name__ == "__main__":
    app()
