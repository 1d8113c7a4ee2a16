"""A real HTTP/1.1 server on a loopback address for tests of outbound HTTP: it counts every TCP
connection it accepts (before reading a byte), records every request, and serves scripted
routes (answers, redirects, large and slow bodies), over TLS when given a certificate."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    404: "Not Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    500: "Internal Server Error",
}


# The SSRF table: hosts a URL may name to reach this machine, a private network or a cloud
# metadata service, each spelled as an attacker would, with the kind the policy calls it. Every
# test of a surface that takes URLs (registering, fetching, search results) runs through it.
INTERNAL_HOST_LITERALS: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),  # inet_aton shorthand
    ("2130706433", "loopback"),  # 127.0.0.1 as one number
    ("0x7f.0.0.1", "loopback"),  # hexadecimal
    ("0177.0.0.1", "loopback"),  # octal
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata service
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "not a public address"),  # carrier-grade NAT
    ("[::1]", "loopback"),
    ("[::]", "unspecified"),
    ("[fe80::1]", "link-local"),
    ("[fc00::1]", "private"),
    ("[ff02::1]", "multicast"),
    ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped
    ("[::ffff:10.0.0.1]", "private"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[2002:7f00:1::]", "loopback"),  # 6to4 around 127.0.0.1
    ("[64:ff9b::a00:1]", "private"),  # NAT64 around 10.0.0.1
]
INTERNAL_HOST_NAMES: list[tuple[str, str]] = [
    ("localhost", "points at this machine"),
    ("api.localhost", "points at this machine"),
    ("metadata.google.internal", "cloud metadata service"),
    ("db.internal", "private networks only"),
    ("printer.local", "private networks only"),
    ("edrs-gateway", "single-label name"),
]
SSRF_URLS: list[tuple[str, str]] = [
    *((f"http://{host}/", kind) for host, kind in INTERNAL_HOST_LITERALS),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    *((f"http://{host}/", kind) for host, kind in INTERNAL_HOST_NAMES),
    ("file:///etc/passwd", "must use http or https"),
    ("gopher://127.0.0.1:6379/_INFO", "must use http or https"),
    ("http://user:pw@example.com/", "must not carry credentials"),
]
"""(url, words of the reason it is refused with) for every SSRF attack URL of the table."""


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes
    sni: str | None
    sent: int = 0
    """Body bytes the handler managed to write before it finished or the client went away."""
    client_gone: bool = False

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None


class Responder:
    """Writes one response; every response closes its connection."""

    def __init__(
        self, server: LoopbackHttpServer, request: RecordedRequest, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.request = request
        self._writer = writer

    async def head(self, status: int, headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self._writer.drain()

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()
        self.request.sent += len(data)

    async def send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        await self.head(status, {"Content-Length": str(len(body)), **(headers or {})})
        await self.write(body)


Handler = Callable[[RecordedRequest, Responder], Awaitable[None]]


def respond(
    status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: RecordedRequest, out: Responder) -> None:
        await out.send(status, body, headers)

    return handler


def redirect(location: str | None = None, status: int = 302) -> Handler:
    """Redirects to `location`, or to the request's `?to=` parameter."""

    async def handler(request: RecordedRequest, out: Responder) -> None:
        await out.send(status, b"", {"Location": location or request.query("to") or "/"})

    return handler


def large_body(
    total: int,
    chunk: int = 64 * 1024,
    *,
    declare_length: bool = True,
    headers: dict[str, str] | None = None,
) -> Handler:
    """Writes `total` bytes (of `b"a"`) chunk by chunk, stopping when the client goes away."""

    async def handler(request: RecordedRequest, out: Responder) -> None:
        head = dict(headers or {})
        if declare_length:
            head["Content-Length"] = str(total)
        await out.head(200, head)
        remaining = total
        while remaining:
            n = min(chunk, remaining)
            await out.write(b"a" * n)
            remaining -= n

    return handler


def held(after_head: bool = True) -> Handler:
    """Sends the head (or nothing) and then nothing until the server stops."""

    async def handler(request: RecordedRequest, out: Responder) -> None:
        if after_head:
            await out.head(200, {"Content-Length": "10"})
        await out.server.stopping.wait()

    return handler


def drip(interval: float) -> Handler:
    """A body that never ends, one byte every `interval` seconds: each read succeeds in time, so
    only a limit on the whole request stops it."""

    async def handler(request: RecordedRequest, out: Responder) -> None:
        await out.head(200)  # no length: the body ends when the connection does
        while not out.server.stopping.is_set():
            await out.write(b"x")
            await asyncio.sleep(interval)

    return handler


@dataclass
class LoopbackHttpServer:
    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    routes: dict[str, Handler] = field(default_factory=dict)
    connections: int = 0
    """TCP connections accepted, counted before the first byte is read."""
    requests: list[RecordedRequest] = field(default_factory=list)
    sni_names: list[str | None] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    def url(self, path: str = "/", host: str | None = None) -> str:
        shown = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{self.scheme}://{shown}:{self.port}{path}"

    async def start(self) -> Self:
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._record_sni
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.close()
        # Connections still open are cut, so their handlers end with ConnectionError rather than
        # a cancellation; one that still does not end within a few seconds is cancelled.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _record_sni(self, _sslobj: object, name: str | None, _ctx: object) -> None:
        self.sni_names.append(name)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away or failed the handshake: its business
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sni = None
        if self.ssl_context is not None:
            count = len(self.sni_names)
            await writer.start_tls(self.ssl_context)
            sni = self.sni_names[count] if len(self.sni_names) > count else None
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        request = RecordedRequest(method, target, headers, body, sni)
        self.requests.append(request)
        handler = self.routes.get(request.path, respond(404, b"no such route"))
        try:
            await handler(request, Responder(self, request, writer))
        except ConnectionError:
            request.client_gone = True


def self_signed_tls(names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a certificate valid for `names` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return server, client
