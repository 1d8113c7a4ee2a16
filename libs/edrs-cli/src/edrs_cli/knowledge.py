"""``edrs knowledge``: fill knowledge collections from files and folders, list them and their
documents, search them, delete from them.

A client of the gateway's `/api/v1/knowledge` routes like any other; credentials as every `edrs`
command that talks to the API (`edrs_cli.gateway_api`). `ingest` uploads each file as it is
(the knowledge service reads the format from the bytes) under an `externalId` made from its path,
so ingesting the same folder again updates what changed and leaves the rest alone.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
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
    help="Knowledge collections: ingest files and folders, list, search, learning gaps, delete.",
    no_args_is_help=True,
)

API = "/api/v1/knowledge"
# The gateway's upload limit (EDRS_GATEWAY_KNOWLEDGE_MAX_UPLOAD_BYTES): larger files are reported
# as failed without being sent.
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# Uploads may take long on a slow link; each other call is quick.
TIMEOUT = httpx.Timeout(30.0, write=600.0, read=600.0)
# How often `ingest` asks how far the document it waits for is.
POLL_SECONDS = 1.0
END_STATES = ("indexed", "failed")
# A 429 (the tenant's rate limit) is waited out, as its Retry-After says, this many times at most.
RATE_LIMIT_RETRIES = 30

Collection = Annotated[
    str,
    typer.Option("--collection", "-c", help="The collection's name (or id)."),
]


class KnowledgeError(Exception):
    """A failure to tell the user in one line; `code` is the exit code (2: bad input), `status`
    the HTTP status behind it (0: none)."""

    def __init__(self, message: str, code: int = 1, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# Refusals that concern the whole run, not one file: stop rather than fail every file alike.
_FATAL = (401, 403, 404)


def _check(reply: httpx.Response, *expected: int) -> Any:
    if reply.status_code in (expected or (200,)):
        return reply.json() if reply.content else None
    detail = problem_detail(reply)
    if reply.status_code == 401:
        detail = f"authentication failed: {detail}"
    code = 2 if reply.status_code in (400, 413, 415, 422) else 1
    raise KnowledgeError(detail, code, reply.status_code)


def send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; a 429 is waited out (Retry-After, a second without one, a minute at most) and
    sent again, RATE_LIMIT_RETRIES times at most. A file to upload is given as
    `files={"file": (name, path, type)}` and opened anew for each try."""

    def once() -> httpx.Response:
        files = kwargs.get("files")
        if files is None:
            return client.request(method, path, **kwargs)
        name, source, media = files["file"]
        with Path(source).open("rb") as handle:
            return client.request(
                method, path, **{**kwargs, "files": {"file": (name, handle, media)}}
            )

    reply = once()
    for _ in range(RATE_LIMIT_RETRIES):
        if reply.status_code != 429:
            break
        time.sleep(min(float(reply.headers.get("Retry-After", "1") or 1), 60.0))
        reply = once()
    return reply


@dataclass
class Session:
    """An authenticated client of the gateway's API."""

    client: httpx.Client
    base: str


def _session(url: str | None, token: str | None, api_key: str | None, state_dir: Path) -> Session:
    base = gateway_url(url, state_dir)
    client = httpx.Client(base_url=base, timeout=TIMEOUT)
    try:
        bearer = access_token(client, token, api_key)
    except BaseException:
        client.close()
        raise
    client.headers["Authorization"] = f"Bearer {bearer}"
    return Session(client, base)


def _run(url: str | None, token: str | None, api_key: str | None, state_dir: Path) -> Session:
    try:
        return _session(url, token, api_key, state_dir)
    except GatewayApiError as exc:
        raise _exit(str(exc), exc.code) from None
    except httpx.TransportError as exc:
        raise _exit(
            f"cannot reach the gateway at {gateway_url(url, state_dir)}: {exc}", 1
        ) from None


def _exit(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _pages(client: httpx.Client, path: str, items: str, **query: Any) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        params = {**query, "pageSize": 200, "pageToken": token}
        body = _check(send(client, "GET", path, params=params))
        yield from body[items]
        token = body["nextPageToken"]
        if not token:
            return


# -- ingest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: Path
    external_id: str
    size: int


def files_of(paths: list[Path], prefix: str = "") -> list[SourceFile]:
    """Every file under `paths`, each with its externalId: `prefix` + its path inside the folder
    given (a file given directly: its name). Hidden files and folders (a name starting with `.`)
    are skipped. KnowledgeError (exit 2) for a path that does not exist, or for two files that
    would get the same externalId."""
    found: list[SourceFile] = []
    for given in paths:
        if not given.exists():
            raise KnowledgeError(f"{given}: no such file or folder", 2)
        if given.is_file():
            found.append(SourceFile(given, prefix + given.name, given.stat().st_size))
            continue
        for path in sorted(given.rglob("*")):
            inside = path.relative_to(given)
            if any(part.startswith(".") for part in inside.parts) or not path.is_file():
                continue
            found.append(SourceFile(path, prefix + inside.as_posix(), path.stat().st_size))
    seen: dict[str, Path] = {}
    for f in found:
        if f.external_id in seen:
            raise KnowledgeError(
                f"{seen[f.external_id]} and {f.path} would both be externalId {f.external_id!r}; "
                "ingest them in separate runs with different --prefix values",
                2,
            )
        seen[f.external_id] = f.path
    return found


@dataclass
class Summary:
    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    # (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "ingested": len(self.ingested),
            "unchanged": len(self.unchanged),
            "queued": len(self.queued),
            "failed": [{"path": p, "reason": why} for p, why in self.failed],
        }


def ensure_collection(client: httpx.Client, name: str, create: bool) -> dict[str, Any]:
    reply = send(client, "GET", f"{API}/collections/{name}")
    if reply.status_code == 404 and create:
        reply = send(client, "POST", f"{API}/collections", json={"name": name})
        return dict(_check(reply, 201))
    if reply.status_code == 404:
        raise KnowledgeError(f"no collection {name!r}; leave out --no-create to create it", 2)
    return dict(_check(reply))


def _why(document: dict[str, Any]) -> str:
    failure = document.get("failure") or {}
    return f"{failure.get('code', 'failed')}: {failure.get('message', '')}".rstrip(": ")


def upload(client: httpx.Client, collection_id: str, source: SourceFile) -> dict[str, Any]:
    reply = send(
        client,
        "POST",
        f"{API}/collections/{collection_id}/files",
        files={"file": (source.path.name, source.path, "application/octet-stream")},
        data={"externalId": source.external_id, "source": str(source.path)},
    )
    return dict(_check(reply, 200, 202))


def ingest_files(
    client: httpx.Client,
    collection_id: str,
    sources: list[SourceFile],
    *,
    wait: bool,
    timeout: float,
    console: Console,
) -> Summary:
    summary = Summary()
    pending: dict[str, str] = {}  # document id -> path
    show = console.is_terminal
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        sending = bar.add_task("uploading", total=len(sources))
        for source in sources:
            name = str(source.path)
            bar.update(sending, description=f"uploading {source.external_id}")
            if source.size > MAX_UPLOAD_BYTES:
                summary.failed.append(
                    (name, f"too_large: {source.size} bytes; the most is {MAX_UPLOAD_BYTES}")
                )
            else:
                try:
                    answer = upload(client, collection_id, source)
                except KnowledgeError as exc:
                    if exc.status in _FATAL:
                        raise
                    summary.failed.append((name, str(exc)))
                else:
                    document = answer["document"]
                    if answer["outcome"] == "unchanged":
                        summary.unchanged.append(name)
                    elif document["state"] == "failed":
                        summary.failed.append((name, _why(document)))
                    else:
                        pending[document["id"]] = name
            bar.advance(sending)
        bar.update(sending, description="uploaded")
        if not wait:
            summary.queued = list(pending.values())
            return summary
        indexing = bar.add_task("indexing", total=len(pending))
        deadline = time.monotonic() + timeout
        # Documents are ingested about in the order they came: wait for the oldest, then check
        # the next at once (often done by then), so waiting costs one request per interval.
        while pending:
            document_id, name = next(iter(pending.items()))
            document = _check(send(client, "GET", f"{API}/documents/{document_id}"))
            if document["state"] in END_STATES:
                del pending[document_id]
                if document["state"] == "indexed":
                    summary.ingested.append(name)
                else:
                    summary.failed.append((name, _why(document)))
                bar.advance(indexing)
                continue
            if time.monotonic() > deadline:
                summary.queued = list(pending.values())
                break
            time.sleep(POLL_SECONDS)
    return summary


def _print_summary(summary: Summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.as_json(), indent=2))
        return
    parts = [
        f"ingested {len(summary.ingested)}",
        f"unchanged {len(summary.unchanged)}",
        f"failed {len(summary.failed)}",
    ]
    if summary.queued:
        parts.append(f"still queued {len(summary.queued)}")
    print(", ".join(parts))
    for path, why in summary.failed:
        print(f"  failed: {path}: {why}")
    for path in summary.queued:
        print(f"  still queued: {path}")


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and folders (folders are walked recursively).")
    ],
    collection: Collection,
    create: Annotated[
        bool, typer.Option("--create/--no-create", help="Create the collection if it is missing.")
    ] = True,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Put this in front of every externalId.")
    ] = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Wait until every document is indexed or failed (default)."
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Longest wait for indexing, in seconds.")
    ] = 1800.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Upload files and folders into a collection, with a progress bar, then a summary:
    ingested, unchanged, failed (with why). Each file's externalId is its path inside the folder
    given (a file given directly: its name), so ingesting again updates only what changed.
    Exit 1 when a file failed."""
    try:
        sources = files_of(paths, prefix)
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    session = _run(url, token, api_key, state_dir)
    console = Console(stderr=True)
    try:
        with session.client:
            found = ensure_collection(session.client, collection, create)
            summary = ingest_files(
                session.client,
                found["id"],
                sources,
                wait=wait,
                timeout=timeout,
                console=console,
            )
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    except httpx.TransportError as exc:
        raise _exit(f"the gateway at {session.base} went away: {exc}", 1) from None
    _print_summary(summary, as_json)
    if summary.failed:
        raise typer.Exit(1)


# -- collections, documents, search, delete ---------------------------------------------------


def _table(columns: list[str], rows: list[list[str]]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)


@app.command()
def collections(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List the tenant's collections."""
    session = _run(url, token, api_key, state_dir)
    try:
        with session.client:
            found = list(_pages(session.client, f"{API}/collections", "collections"))
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    _table(
        ["name", "id", "documents", "passages", "created"],
        [
            [c["name"], c["id"], str(c["documentCount"]), str(c["chunkCount"]), c["createdAt"]]
            for c in found
        ],
    )


@app.command()
def documents(
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Only this collection's (name or id).")
    ] = "",
    state: Annotated[
        str,
        typer.Option(
            "--state",
            help="Only documents in this state: queued, parsing, embedding, indexed, failed.",
        ),
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List documents, newest first, with their state (and why a failed one failed)."""
    params = {k: v for k, v in {"collection": collection, "state": state}.items() if v}
    session = _run(url, token, api_key, state_dir)
    try:
        with session.client:
            found = list(_pages(session.client, f"{API}/documents", "documents", **params))
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    _table(
        ["id", "externalId", "title", "state", "version", "format", "passages"],
        [
            [
                d["id"],
                d["externalId"] or "",
                d["title"],
                d["state"] if d["state"] != "failed" else f"failed ({_why(d)})",
                str(d["version"]),
                d["format"],
                str(d["chunkCount"]),
            ]
            for d in found
        ],
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: Annotated[
        list[str] | None,
        typer.Option(
            "--collection", "-c", help="Search this collection; repeatable. Default: all."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Passages to show.")] = 5,
    mode: Annotated[
        str, typer.Option("--mode", help="hybrid (default), vector or keyword.")
    ] = "hybrid",
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="KEY=VALUE a document's metadata must hold; repeatable."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Search passages, best first, with their source and score."""
    wanted: dict[str, list[str]] = {}
    for item in filters or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _exit(f"--filter {item!r}: write KEY=VALUE", 2)
        wanted.setdefault(key, []).append(value)
    body = {
        "query": query,
        "collections": collection or [],
        "k": k,
        "mode": mode,
        "filters": wanted,
    }
    session = _run(url, token, api_key, state_dir)
    try:
        with session.client:
            found = _check(send(session.client, "POST", f"{API}/search", json=body))
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for rank, p in enumerate(found["passages"], start=1):
        citation = p["citation"]
        where = [p["title"]]
        if citation["page"]:
            where.append(f"page {citation['page']}")
        if citation["headingPath"]:
            where.append(" > ".join(citation["headingPath"]))
        print(f"[{rank}] {', '.join(where)}  (score {p['score']:.4f}, document {p['documentId']})")
        print(f"    {' '.join(p['text'].split())}")
    if not found["passages"]:
        print("no passage matches", file=sys.stderr)


@app.command()
def gaps(
    collection: Annotated[str, typer.Argument(help="The collection (name or id).")],
    days: Annotated[
        int, typer.Option("--days", min=1, max=365, help="Searches of the last N days.")
    ] = 30,
    max_similarity: Annotated[
        float | None,
        typer.Option(
            "--max-similarity",
            min=-1.0,
            max=1.0,
            help="Poor: best vector similarity below this (default: the service's, 0.5).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most N questions.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Learning gaps: the questions COLLECTION answered poorly in recent searches, worst first,
    as topics to add to it."""
    params: dict[str, Any] = {"windowDays": days}
    if max_similarity is not None:
        params["maxSimilarity"] = max_similarity
    session = _run(url, token, api_key, state_dir)
    found: list[dict[str, Any]] = []
    try:
        with session.client:
            for gap in _pages(
                session.client, f"{API}/collections/{collection}/gaps", "gaps", **params
            ):
                found.append(gap)
                if len(found) >= limit:
                    break
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if not found:
        print(f"no learning gap in {collection} over the last {days} days", file=sys.stderr)
        return

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    _table(
        ["question", "asked", "no passage", "best similarity", "last asked", "from"],
        [
            [
                g["query"],
                str(g["count"]),
                str(g["noPassageCount"]),
                score(g["bestSimilarity"]),
                g["lastAskedAt"],
                ", ".join(g["askedFrom"]),
            ]
            for g in found
        ],
    )


@app.command()
def delete(
    document_ids: Annotated[
        list[str] | None, typer.Argument(help="Documents to delete (ids).", show_default=False)
    ] = None,
    collection: Annotated[
        str,
        typer.Option("--collection", "-c", help="Delete this whole collection (name or id)."),
    ] = "",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete a collection without asking.")
    ] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete documents, or a whole collection, with everything derived from them (passages,
    vectors, graph provenance); prints what was removed."""
    if bool(document_ids) == bool(collection):
        raise _exit("name documents to delete, or a --collection (not both)", 2)
    if (
        collection
        and not yes
        and not typer.confirm(
            f"delete collection {collection!r} and every document in it?", err=True
        )
    ):
        raise typer.Exit(1)
    session = _run(url, token, api_key, state_dir)
    try:
        with session.client:
            if collection:
                done = _check(send(session.client, "DELETE", f"{API}/collections/{collection}"))
                print(
                    f"deleted collection {collection}: {done['documentsDeleted']} documents, "
                    f"{done['chunksDeleted']} passages, {done['vectorsDeleted']} vectors"
                )
                return
            for document_id in document_ids or []:
                done = _check(send(session.client, "DELETE", f"{API}/documents/{document_id}"))
                print(
                    f"deleted document {document_id}: {done['versionsDeleted']} versions, "
                    f"{done['chunksDeleted']} passages, {done['vectorsDeleted']} vectors, "
                    f"{done['provenanceDeleted']} graph links"
                )
    except KnowledgeError as exc:
        raise _exit(str(exc), exc.code) from None
