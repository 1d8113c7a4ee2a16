"""The ``edrs`` command: one root app; each command group lives in its own module."""

from __future__ import annotations

import typer

from edrs_cli import dev

app = typer.Typer(
    name="edrs",
    help="EDRS developer and operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# New groups (`edrs events ...`, `edrs admin ...`) are one add_typer line each.
app.add_typer(dev.app, name="dev")


if __name__ == "__main__":
    app()
