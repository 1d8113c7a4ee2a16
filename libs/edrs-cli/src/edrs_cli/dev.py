"""``edrs dev``: run the whole fleet locally on embedded engines (up, down, stop and start one
service, status, logs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from edrs_core.engines import EmbeddedEngine, EngineError, tail_lines
from edrs_core.registry import RegistryError
from edrs_core.registry import service_names as declared_names
from rich.console import Console

from edrs_cli.gateway_api import development_login, token_curl
from edrs_cli.render import status_json, status_table
from edrs_cli.supervisor import (
    DEFAULT_WAIT_TIMEOUT,
    LOG_TAIL,
    Fleet,
    FleetAlreadyRunningError,
    FleetDeclarationError,
    FleetError,
    FleetInterruptedError,
    FleetNotReadyError,
    FleetNotRunningError,
    ProcessExit,
    ServiceDiedError,
)

app = typer.Typer(help="Run the EDRS fleet locally on embedded engines.", no_args_is_help=True)
# Not a terminal (CI, a log file): rich would wrap the table at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

ENGINE_NAMES = ("postgres", "redis", "nats", "temporal", "openbao")

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="EDRS_STATE_DIR",
        help="Where engine data, logs and fleet.json live.",
        file_okay=False,
    ),
]
DEFAULT_STATE_DIR = Path(".edrs")
# The checkout's service folders: one that is not installed yet still joins the fleet.
DEFAULT_SERVICES_DIR = Path("services")
ServicesDir = Annotated[
    Path,
    typer.Option(
        "--services-dir",
        envvar="EDRS_SERVICES_DIR",
        help="Service folders (each declaring an `edrs.services` entry point in its "
        "pyproject.toml) to run beside the installed services; ignored when absent.",
        file_okay=False,
    ),
]


def _print_exit(exit: ProcessExit, lines: int = LOG_TAIL) -> None:
    err_console.print(f"[bold red]{exit.name} exited with code {exit.code}[/bold red]")
    err_console.print(f"last {lines} lines of {exit.log_path}:", markup=False)
    for line in exit.log_tail(lines):
        err_console.print(f"  | {line}", markup=False, highlight=False)


def _print_tail(name: str, path: Path, lines: int) -> None:
    err_console.print(f"[bold]{name}[/bold]: last {lines} lines of {path}:")
    for line in tail_lines(path, lines) or ["(log is empty)"]:
        err_console.print(f"  | {line}", markup=False, highlight=False)


@app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    services_dir: ServicesDir = DEFAULT_SERVICES_DIR,
    wait_timeout: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds to wait for every service to be ready."),
    ] = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Start engines and all services, wait until ready, then supervise in the foreground."""
    fleet = Fleet(state_dir, services_dir=services_dir.resolve())
    try:
        fleet.claim()
    except FleetAlreadyRunningError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    fleet.handle_signals()

    def engine_started(name: str, engine: EmbeddedEngine) -> None:
        console.print(f"engine {name} ready at {engine.url()} (pid {engine.pid})")

    code = 0
    # The exit that stopped the fleet, repeated with its reason after the shutdown's output.
    cause: ProcessExit | None = None
    try:
        console.print(f"starting the fleet in {fleet.state_dir}")
        rows = fleet.up(wait_timeout=wait_timeout, on_engine=engine_started)
        console.print(status_table(rows))
        console.print(f"gateway: [bold]{fleet.gateway_url}[/bold]")
        _print_token_hint(fleet)
        console.print("supervising; Ctrl-C or `edrs dev down` stops everything")
        exited = fleet.supervise()
        if exited is not None:
            _print_exit(exited)
            cause, code = exited, 1
    except FleetInterruptedError:
        console.print("interrupted")
    except FleetDeclarationError as exc:
        err_console.print(f"[bold red]{exc}[/bold red]", markup=True, highlight=False)
        code = 1
    except ServiceDiedError as exc:
        _print_exit(exc.exit)
        cause, code = exc.exit, 1
    except FleetNotReadyError as exc:
        err_console.print(f"[bold red]{exc}[/bold red]")
        for name in exc.names:
            _print_tail(name, exc.log_paths[name], 10)
        code = 1
    except EngineError as exc:
        err_console.print(f"[bold red]engine failed to start[/bold red]\n{exc}", markup=True)
        code = 1
    finally:
        console.print("stopping the fleet")
        for failed in fleet.shutdown():
            _print_exit(failed, 10)
        console.print("stopped")
        if cause is not None:
            reason = cause.reason()
            because = f": {reason}" if reason else f" (see {cause.log_path})"
            err_console.print(
                f"the fleet stopped because {cause.name} exited with code {cause.code}{because}",
                markup=False,
                highlight=False,
            )
    raise typer.Exit(code)


def _print_token_hint(fleet: Fleet) -> None:
    """How to get an access token for the admin the gateway created on its first start (asked of
    the gateway's API, like any client would)."""
    if fleet.gateway_url is None:
        return
    with httpx.Client(base_url=fleet.gateway_url, timeout=10.0) as client:
        grant = development_login(client)
    if grant is None:
        console.print(
            "get a token: create a tenant and its admin with `edrs admin create-tenant NAME "
            f"--admin-email EMAIL`, then POST {fleet.gateway_url}/api/v1/auth/token"
        )
        return
    console.print(f"get an access token for {grant['email']}:")
    console.print(
        token_curl(fleet.gateway_url, grant), markup=False, highlight=False, soft_wrap=True
    )


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop the fleet running in the state dir and wait until every process is gone."""
    fleet = Fleet(state_dir)
    if not fleet.down():
        console.print(f"no fleet is running in {fleet.state_dir}")
        return
    console.print("fleet stopped")


ServiceName = Annotated[str, typer.Argument(help="A service of the running fleet.")]


@app.command()
def stop(
    service: ServiceName,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Stop one service and keep it stopped while the rest runs on (`edrs dev start` resumes it).

    Events for it wait in the bus; calls to it fail as UNAVAILABLE meanwhile."""
    fleet = Fleet(state_dir)
    try:
        fleet.stop_service(service)
    except FleetError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{service} stopped; `edrs dev start {service}` starts it again")


@app.command()
def start(
    service: ServiceName,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    wait_timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the service to be ready.")
    ] = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Start again a service `edrs dev stop` stopped, on its ports; returns once it is ready."""
    fleet = Fleet(state_dir)
    try:
        fleet.start_service(service, wait_timeout)
    except FleetError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{service} ready")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Show each service with a live readiness check; exit 1 when no fleet runs."""
    fleet = Fleet(state_dir)
    try:
        rows = fleet.status()
    except FleetNotRunningError as exc:
        if as_json:
            print("[]")
        err_console.print(str(exc))
        raise typer.Exit(1) from None
    if as_json:
        print(status_json(rows))
    else:
        console.print(status_table(rows))


@app.command()
def logs(
    service: Annotated[
        str,
        typer.Argument(
            help="A service (`edrs dev status` lists them), or postgres, redis, nats, temporal."
        ),
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines of tail.")] = 50,
) -> None:
    """Print the tail of a service's (or engine's) log; ``-f`` follows it."""
    fleet = Fleet(state_dir)
    valid = [*_known_services(fleet), *ENGINE_NAMES]
    if service not in valid:
        raise typer.BadParameter(
            f"unknown service {service!r}; valid names: {', '.join(valid)}", param_hint="SERVICE"
        )
    path = fleet.log_path(service)
    if not path.exists() and not follow:
        err_console.print(f"no log yet for {service} at {path}")
        raise typer.Exit(1)
    for line in tail_lines(path, lines) if lines else []:
        print(line)
    if follow:
        _follow(path)


def _known_services(fleet: Fleet) -> list[str]:
    """The declared services, and those of the fleet recorded in the state dir."""
    recorded = [r["name"] for r in (fleet.read_state() or {}).get("services", [])]
    try:
        declared = declared_names(DEFAULT_SERVICES_DIR)
    except RegistryError:
        declared = []
    return sorted({*declared, *recorded})


def _follow(path: Path) -> None:
    """``tail -f``: print lines appended to ``path`` until Ctrl-C."""
    try:
        while not path.exists():
            time.sleep(0.5)
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            handle.seek(0, 2)
            while True:
                line = handle.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.25)
    except KeyboardInterrupt:
        pass


__all__ = ["FleetError", "app"]
