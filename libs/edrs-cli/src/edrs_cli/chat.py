"""``edrs chat PERSONA``: talk to a persona from a terminal, replies streamed as they are written.

It is a client of the gateway's public API like any other (Server-Sent Events on the messages
route), and reads no database. Credentials: --token / EDRS_TOKEN, or --api-key / EDRS_API_KEY
(exchanged for a token), or, beside a local development fleet, the development admin the gateway
created on its first start (see `edrs_cli.gateway_api`).
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from edrs_core.wav import wav

from edrs_cli.gateway_api import (
    DEFAULT_GATEWAY_URL,
    DEFAULT_STATE_DIR,
    GatewayApiError,
    access_token,
    gateway_url,
    problem_detail,
)

# Generation on a CPU takes a while; the stream itself has no end-to-end limit.
TIMEOUT = httpx.Timeout(30.0, read=300.0)


class ChatError(Exception):
    """A failure to tell the user in one line (and exit 1)."""


def resolve_persona(client: httpx.Client, persona: str) -> dict[str, Any]:
    """PERSONA is an id, or the name of exactly one active persona (case-insensitive)."""
    try:
        persona_id = uuid.UUID(persona)
    except ValueError:
        persona_id = None
    if persona_id is not None:
        reply = client.get(f"/api/v1/personas/{persona_id}")
        if reply.status_code == 404:
            raise ChatError(f"persona {persona} not found")
        _check(reply)
        return dict(reply.json())
    matches: list[dict[str, Any]] = []
    page_token = ""
    while True:
        reply = client.get("/api/v1/personas", params={"pageSize": 200, "pageToken": page_token})
        _check(reply)
        body = reply.json()
        matches += [p for p in body["personas"] if p["name"].casefold() == persona.casefold()]
        page_token = body["nextPageToken"]
        if not page_token:
            break
    if not matches:
        raise ChatError(f"no persona named {persona!r}; `GET /api/v1/personas` lists them")
    if len(matches) > 1:
        ids = ", ".join(p["id"] for p in matches)
        raise ChatError(f"{len(matches)} personas are named {persona!r}; pass the id: {ids}")
    return matches[0]


def _check(reply: httpx.Response) -> None:
    if reply.status_code == 401:
        raise ChatError(f"authentication failed: {problem_detail(reply)}")
    if reply.status_code >= 400:
        raise ChatError(problem_detail(reply))


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream; comments and pings are skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


class Typing:
    """`typing…` on the terminal until the first piece of the reply arrives."""

    TEXT = "typing…"

    def __init__(self) -> None:
        self.shown = False
        self.enabled = sys.stderr.isatty()

    def show(self) -> None:
        if self.enabled and not self.shown:
            sys.stderr.write(self.TEXT)
            sys.stderr.flush()
            self.shown = True

    def hide(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * len(self.TEXT) + "\r")
            sys.stderr.flush()
            self.shown = False


def send(
    client: httpx.Client,
    persona_id: str,
    conversation: str,
    text: str,
    options: dict[str, Any],
    prefix: str = "",
) -> dict[str, Any]:
    """One turn: print the reply as it streams; return the `completed` body."""
    typing = Typing()
    with client.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
        headers={"Accept": "text/event-stream"},
        json={"text": text, **({"options": options} if options else {})},
    ) as reply:
        if reply.status_code != 200:
            reply.read()
            if reply.status_code == 404:
                raise ChatError(f"persona {persona_id} not found")
            _check(reply)
        started = False
        for event, data in sse_events(reply.iter_lines()):
            if event in ("accepted", "queued", "started"):
                typing.show()
            elif event in ("tool_call", "tool_result"):
                # The persona's tool use, on stderr so stdout stays the reply.
                typing.hide()
                sys.stderr.write(tool_line(event, data) + "\n")
                sys.stderr.flush()
            elif event == "delta":
                typing.hide()
                if not started:
                    sys.stdout.write(prefix)
                    started = True
                sys.stdout.write(data["text"])
                sys.stdout.flush()
            elif event == "completed":
                typing.hide()
                sys.stdout.write("\n")
                sys.stdout.flush()
                return data
            elif event == "error":
                typing.hide()
                raise ChatError(str(data.get("detail") or data))
    typing.hide()
    raise ChatError("the gateway ended the stream before the reply was complete")


def tool_line(event: str, data: dict[str, Any]) -> str:
    """`[tool] name {"a": 1}: running` / `[tool] name: 57 characters` (or the error)."""
    if event == "tool_call":
        arguments = json.dumps(data.get("arguments") or {}, ensure_ascii=False)
        status = data.get("status", "")
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return f"[tool] {data.get('tool')} {arguments}: {status}{reason}"
    content = str(data.get("content", ""))
    if data.get("isError"):
        return f"[tool] {data.get('tool')} failed: {content[:200]}"
    return f"[tool] {data.get('tool')}: {len(content)} characters"


def send_voice(
    client: httpx.Client,
    persona_id: str,
    conversation: str,
    recording: Path,
    options: dict[str, Any],
    speak: Path | None,
) -> dict[str, Any]:
    """One turn by voice: print what was heard and the reply as it streams; write the reply's
    audio (every sentence, in order) to `speak` as one WAV file."""
    form = {"responseFormat": "pcm"}
    if "maxTokens" in options:
        form["maxTokens"] = str(options["maxTokens"])
    typing = Typing()
    pcm: list[bytes] = []
    rate = 0
    with client.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/voice-messages",
        headers={"Accept": "text/event-stream"},
        files={"file": (recording.name, recording.read_bytes(), "application/octet-stream")},
        data=form,
    ) as reply:
        if reply.status_code != 200:
            reply.read()
            if reply.status_code == 404:
                raise ChatError(f"persona {persona_id} not found")
            _check(reply)
        started = False
        for event, data in sse_events(reply.iter_lines()):
            if event == "transcript":
                print(f"(heard) {data['text']}", file=sys.stderr)
            elif event in ("accepted", "queued", "started"):
                typing.show()
            elif event == "delta":
                typing.hide()
                started = True
                sys.stdout.write(data["text"])
                sys.stdout.flush()
            elif event == "audio":
                rate = int(data["sampleRate"])
                pcm.append(base64.b64decode(data["data"]))
            elif event == "completed":
                typing.hide()
                if started:
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                if speak is not None:
                    speak.write_bytes(wav(b"".join(pcm), rate or 22_050))
                    print(f"(reply audio written to {speak})", file=sys.stderr)
                return data
            elif event == "error":
                typing.hide()
                raise ChatError(str(data.get("detail") or data))
    typing.hide()
    raise ChatError("the gateway ended the stream before the reply was complete")


def write_speech(client: httpx.Client, text: str, path: Path) -> None:
    """The reply spoken (POST /api/v1/audio/speech) into a WAV file."""
    reply = client.post("/api/v1/audio/speech", json={"input": text, "responseFormat": "wav"})
    _check(reply)
    path.write_bytes(reply.content)
    print(f"(reply audio written to {path})", file=sys.stderr)


def chat(
    persona: Annotated[str, typer.Argument(help="The persona's id or name.")],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Send this one message, print the reply, exit."),
    ] = None,
    conversation: Annotated[
        str | None,
        typer.Option(
            "--conversation", "-c", help="Conversation id to continue (default: a new one)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="EDRS_URL",
            help="The gateway. Default: the local fleet's (its state dir), else "
            f"{DEFAULT_GATEWAY_URL}.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="EDRS_TOKEN", help="An access token.", show_default=False),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="EDRS_API_KEY",
            help="An API key to log in with.",
            show_default=False,
        ),
    ] = None,
    voice: Annotated[
        Path | None,
        typer.Option(
            "--voice",
            help="Send this recording (WAV, MP3, OGG, WebM...) as one message, print what was "
            "heard and the reply, exit.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    speak: Annotated[
        Path | None,
        typer.Option(
            "--speak",
            help="Write the reply's audio to this WAV file (with --message or --voice).",
            dir_okay=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Longest reply, in tokens.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            envvar="EDRS_STATE_DIR",
            help="The local fleet's state dir (its gateway and development login).",
            file_okay=False,
        ),
    ] = DEFAULT_STATE_DIR,
) -> None:
    """Talk to a persona; replies stream in as the model writes them."""
    if speak is not None and message is None and voice is None:
        print("error: --speak needs --message or --voice", file=sys.stderr)
        raise typer.Exit(2)
    options: dict[str, Any] = {}
    if max_tokens is not None:
        options["maxTokens"] = max_tokens
    if temperature is not None:
        options["temperature"] = temperature
    conversation_id = conversation or f"chat-{uuid.uuid4().hex[:12]}"
    base = gateway_url(url, state_dir)
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            bearer = access_token(client, token, api_key)
            client.headers["Authorization"] = f"Bearer {bearer}"
            found = resolve_persona(client, persona)
            if voice is not None:
                send_voice(client, found["id"], conversation_id, voice, options, speak)
                return
            if message is not None:
                done = send(client, found["id"], conversation_id, message, options)
                if speak is not None:
                    write_speech(client, done["reply"]["text"], speak)
                return
            _interactive(client, found, conversation_id, options)
    except (ChatError, GatewayApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        print(f"error: cannot reach the gateway at {base}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _interactive(
    client: httpx.Client, persona: dict[str, Any], conversation_id: str, options: dict[str, Any]
) -> None:
    print(
        f"talking to {persona['name']} ({persona['role']}), conversation {conversation_id}; "
        "an empty line or Ctrl-D ends it",
        file=sys.stderr,
    )
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if not text:
            return
        try:
            send(client, persona["id"], conversation_id, text, options, f"{persona['name']}> ")
        except KeyboardInterrupt:
            print("\n(interrupted)", file=sys.stderr)
