"""`edrs events` commands: publish, tail, dlq list, dlq replay (a typer app the main CLI mounts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer

from edrs_events.bus import EventBus, connect_bus
from edrs_events.catalog import EventValidationError
from edrs_events.envelope import BaseEvent, Priority
from edrs_events.errors import BusError
from edrs_events.subjects import DEFAULT_NAMESPACE

app = typer.Typer(help="Publish, watch and re-drive EDRS events on the bus.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: events a consumer gave up on.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

BusUrl = Annotated[
    str,
    typer.Option(
        "--bus-url",
        "--nats-url",  # its name before the bus could be Pulsar; still accepted
        envvar=["EDRS_BUS_URL", "EDRS_NATS_URL"],
        help="bus URL (nats:// or pulsar://)",
    ),
]
Namespace = Annotated[
    str,
    typer.Option("--namespace", envvar="EDRS_EVENTS_NAMESPACE", help="subject/stream namespace"),
]
DEFAULT_URL = "nats://127.0.0.1:4222"


async def _bus(url: str, namespace: str) -> EventBus:
    try:
        return await connect_bus(url, namespace=namespace)
    except Exception as exc:  # any failure to connect ends the command with one clear line
        typer.echo(f"error: cannot reach the bus at {url}: {exc!r}", err=True)
        raise typer.Exit(3) from exc


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(help="'<domain>.<action>', e.g. task.task_created")],
    payload: Annotated[str, typer.Option("--payload", help="payload as a JSON object")],
    priority: Annotated[Priority, typer.Option("--priority")] = Priority.NORMAL,
    client_id: Annotated[str | None, typer.Option("--client-id", help="tenant")] = None,
    source: Annotated[str, typer.Option("--source", help="source_container")] = "edrs-cli",
    bus_url: BusUrl = DEFAULT_URL,
    namespace: Namespace = DEFAULT_NAMESPACE,
) -> None:
    """Validate and publish one event; prints its event id."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --payload is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(data, dict):
        typer.echo("error: --payload must be a JSON object", err=True)
        raise typer.Exit(2)
    try:
        event = BaseEvent(
            event_type=event_type,
            source_container=source,
            priority=priority,
            client_id=client_id,
            payload=data,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def run() -> None:
        bus = await _bus(bus_url, namespace)
        try:
            await bus.publish(event)
        finally:
            await bus.close()

    try:
        asyncio.run(run())
    except EventValidationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(event.event_id))


@app.command()
def tail(
    pattern: Annotated[
        str, typer.Argument(help="type pattern: 'persona.*', '*.task_created'")
    ] = "*",
    event_type: Annotated[str | None, typer.Option("--type", help="one exact event type")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="only this tenant")] = None,
    priority: Annotated[Priority | None, typer.Option("--priority", help="only this lane")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="replay what the stream retains first")
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="stop after N events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the wire JSON")] = False,
    bus_url: BusUrl = DEFAULT_URL,
    namespace: Namespace = DEFAULT_NAMESPACE,
) -> None:
    """Print events live as they are published (Ctrl-C to stop)."""

    async def run() -> None:
        bus = await _bus(bus_url, namespace)
        shown = 0
        try:
            stream = bus.tail(
                event_type or pattern, priority=priority, client_id=client_id, from_start=from_start
            )
            # aclosing: unsubscribe as soon as --limit is reached, not when the generator is collected.
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if as_json:
                        typer.echo(event.to_json().decode())
                    else:
                        typer.echo(
                            f"{event.occurred_at.isoformat()} {event.priority.value:<8} "
                            f"{event.event_type} client={event.client_id or '-'} id={event.event_id} "
                            f"{json.dumps(event.payload, sort_keys=True)}"
                        )
                    shown += 1
                    if limit is not None and shown >= limit:
                        break
        finally:
            await bus.close()

    try:
        asyncio.run(run())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except BusError as exc:
        typer.echo(f"error: the bus went away: {exc}", err=True)
        raise typer.Exit(3) from exc
    except KeyboardInterrupt:
        pass


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option("--consumer")] = None,
    event_type: Annotated[str | None, typer.Option("--type")] = None,
    bus_url: BusUrl = DEFAULT_URL,
    namespace: Namespace = DEFAULT_NAMESPACE,
) -> None:
    """List dead letters not yet replayed."""

    async def run() -> None:
        bus = await _bus(bus_url, namespace)
        try:
            letters = await bus.dead_letters(consumer=consumer, event_type=event_type)
        finally:
            await bus.close()
        typer.echo("ID\tCONSUMER\tTYPE\tEVENT_ID\tDELIVERIES\tFAILED_AT\tREASON")
        for letter in letters:
            typer.echo(
                f"{letter.dlq_id}\t{letter.consumer}\t{letter.event_type}\t{letter.event_id}\t"
                f"{letter.deliveries}\t{letter.failed_at.isoformat()}\t{letter.reason}"
            )
        typer.echo(f"{len(letters)} dead letter(s)", err=True)

    asyncio.run(run())


@dlq_app.command("replay")
def dlq_replay(
    dlq_id: Annotated[int | None, typer.Argument(help="dead letter ID from 'dlq list'")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="replay every match")] = False,
    consumer: Annotated[str | None, typer.Option("--consumer", help="with --all")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="with --all")] = None,
    bus_url: BusUrl = DEFAULT_URL,
    namespace: Namespace = DEFAULT_NAMESPACE,
) -> None:
    """Publish dead letters again to their original subject (by ID, or --all with filters)."""
    if (dlq_id is None) == (not replay_all):
        typer.echo("error: give either a dead letter ID or --all", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        bus = await _bus(bus_url, namespace)
        try:
            if dlq_id is not None:
                letters = [await bus.replay_dead_letter(dlq_id)]
            else:
                letters = await bus.replay_dead_letters(consumer=consumer, event_type=event_type)
        finally:
            await bus.close()
        for letter in letters:
            typer.echo(f"replayed {letter.dlq_id} {letter.event_type} {letter.event_id}")
        return len(letters)

    try:
        count = asyncio.run(run())
    except LookupError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{count} replayed", err=True)


def main() -> None:
    """Console script `edrs-events`."""
    app()


if __name__ == "__main__":
    main()
