"""An external system for workflow tests: an HTTP service that records every call it receives and
every side effect it makes (one per idempotency key), and can hold a call until released — what
a step's tool call reaches. Also the ToolCaller that calls it and a task service entry point
whose tool_call steps go to it (run as a child process, to be killed)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from edrs_task.durable.steps import ToolFailed

HOLD_LIMIT_SECONDS = 120.0


@dataclass
class Ledger:
    calls: list[dict[str, Any]] = field(default_factory=list)
    # (key, tool, label) in the order the effects happened; one per key.
    effects: list[tuple[str, str, str]] = field(default_factory=list)
    released: dict[str, threading.Event] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    # Calls with these labels are refused (422): the step fails without retries.
    refused: set[str] = field(default_factory=set)
    # The first call with one of these labels fails (503) before any effect: the step is retried.
    flaky: set[str] = field(default_factory=set)
    # Calls with these labels always fail (503) before any effect: retried until out of attempts.
    down: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, label: str) -> None:
        """The next call labelled `label` waits until release(label)."""
        with self.lock:
            self.released[label] = threading.Event()

    def release(self, label: str) -> None:
        self.released[label].set()

    def labels(self, tool: str | None = None) -> list[str]:
        with self.lock:
            return [label for _, t, label in self.effects if tool is None or t == tool]

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        tool, key = body["tool"], body["key"]
        label = str(body["arguments"].get("label", ""))
        with self.lock:
            self.calls.append(body)
            gate = self.released.get(label)
            if gate is not None:
                self.held.add(label)
        if gate is not None:
            gate.wait(HOLD_LIMIT_SECONDS)
        if label in self.refused:
            return 422, {"error": f"{label} cannot be done"}
        with self.lock:
            if label in self.flaky or label in self.down:
                self.flaky.discard(label)
                return 503, {"error": f"{label} is unavailable for now"}
        with self.lock:
            if key not in {k for k, _, _ in self.effects}:
                self.effects.append((key, tool, label))
            return 200, {"label": label, "effect": [k for k, _, _ in self.effects].index(key)}


class LedgerServer:
    def __init__(self) -> None:
        self.ledger = Ledger()
        ledger = self.ledger

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = ledger.handle(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/call"

    def __enter__(self) -> LedgerServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for gate in self.ledger.released.values():
            gate.set()
        self.server.shutdown()
        self.server.server_close()


class HttpLedgerTools:
    """tool_call steps of the service under test: a POST to the ledger with the step's key."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def unavailable(self) -> str | None:
        return None

    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=HOLD_LIMIT_SECONDS + 10) as client:
            reply = await client.post(
                self.url, json={"tool": tool, "arguments": arguments, "key": idempotency_key}
            )
        if reply.status_code == 422:
            raise ToolFailed(reply.json()["error"])
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result


def main() -> None:
    """`python ledger.py`: the task service, with tool_call steps going to $LEDGER_URL."""
    import dataclasses
    import os

    from edrs_core import run_service
    from edrs_task.app import builder, definition

    tools = HttpLedgerTools(os.environ["LEDGER_URL"])
    run_service(dataclasses.replace(definition, build=builder(tools)))


if __name__ == "__main__":
    main()
