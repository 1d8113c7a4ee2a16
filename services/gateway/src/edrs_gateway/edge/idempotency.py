"""`Idempotency-Key` on POST: the first request is claimed in Redis, its response stored and replayed.

Records are keyed by (tenant or client IP, key) and fingerprinted by method, path and body, so a key
reused for a different request is refused rather than answered with someone else's response.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.edge._asgi import client_ip, header, is_exempt, principal_of

log = logging.getLogger("edrs.gateway.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

# Not replayed: they describe the connection or the moment, not the result.
_VOLATILE_HEADERS = {b"date", b"server", b"connection", b"transfer-encoding", b"keep-alive"}

# Writes the final record only while the claim is still ours (a claim that expired and was
# re-claimed by a retry belongs to that retry).
_FINISH = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['owner'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
end
return 1
"""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a key: ours to execute, or someone else's."""

    state: Literal["claimed", "in_progress", "mismatch", "replay"]
    owner: str = ""
    response: StoredResponse | None = None


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        # Length-prefixed so ("/a", "bc") and ("/ab", "c") cannot collide.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def key_problem(key: bytes) -> str | None:
    """Why an Idempotency-Key value is unusable, or None when it is fine."""
    if not key:
        return f"{HEADER} is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"{HEADER} is {len(key)} characters long; the most is {MAX_KEY_LENGTH}"
    if any(b < 0x21 or b > 0x7E for b in key):
        return f"{HEADER} may hold printable ASCII characters only, without spaces"
    return None


class IdempotencyStore:
    """Claims, stored responses and releases in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "edrs:gateway:idempotency:",
        ttl_seconds: int = 24 * 3600,
        claim_seconds: int = 300,
    ) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.ttl_seconds = ttl_seconds
        # A claim outlives any request (timeouts are shorter) but not a crashed process for long.
        self.claim_seconds = claim_seconds
        self._finish = redis.register_script(_FINISH)

    def _key(self, scope_id: str, key: str) -> str:
        return f"{self.key_prefix}{scope_id}:{key}"

    async def claim(self, scope_id: str, key: str, fp: str) -> Claim:
        owner = uuid.uuid4().hex
        record = orjson.dumps({"state": "in_progress", "fp": fp, "owner": owner})
        name = self._key(scope_id, key)
        # Two rounds at most: the record may expire between a failed SET NX and the GET.
        for _ in range(2):
            if await self.redis.set(name, record, nx=True, ex=self.claim_seconds):
                return Claim("claimed", owner=owner)
            raw = await self.redis.get(name)
            if raw is None:
                continue
            found = orjson.loads(raw)
            if found["fp"] != fp:
                return Claim("mismatch")
            if found["state"] == "in_progress":
                return Claim("in_progress")
            return Claim(
                "replay",
                response=StoredResponse(
                    status=found["status"],
                    headers=[
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in found["headers"]
                    ],
                    body=base64.b64decode(found["body"]),
                ),
            )
        return Claim("in_progress")

    async def complete(
        self, scope_id: str, key: str, fp: str, owner: str, response: StoredResponse
    ) -> None:
        record = orjson.dumps(
            {
                "state": "done",
                "fp": fp,
                "owner": owner,
                "status": response.status,
                "headers": [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers
                ],
                "body": base64.b64encode(response.body).decode(),
            }
        )
        await self._finish(keys=[self._key(scope_id, key)], args=[owner, record, self.ttl_seconds])

    async def release(self, scope_id: str, key: str, owner: str) -> None:
        """Forget a claim so the client may retry (the request failed on our side)."""
        await self._finish(keys=[self._key(scope_id, key)], args=[owner, "", 0])


def _storable(status: int) -> bool:
    # A 5xx or a 429 says nothing about the request itself: the client must be able to retry.
    return 200 <= status < 300 or (400 <= status < 500 and status != 429)


class IdempotencyMiddleware:
    """Pure ASGI: honour `Idempotency-Key` on POST requests.

    First use executes the request and stores its response (2xx and 4xx but 429) for 24 h; a
    repeat with the same method, path and body gets the stored response with
    `Idempotent-Replayed: true`; a different body is 422 `idempotency_key_reused`; a repeat while
    the first still runs is 409 `idempotency_in_progress`; a malformed key is 400
    `invalid_idempotency_key`. Exempt by default: /api/v1/auth/ (token responses are secrets that
    must not be stored).
    """

    def __init__(
        self,
        app: ASGIApp,
        store: IdempotencyStore,
        *,
        exempt_paths: Sequence[str] = ("/api/v1/auth/",),
    ) -> None:
        self.app = app
        self.store = store
        self.exempt_paths = tuple(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or is_exempt(scope["path"], self.exempt_paths)
        ):
            await self.app(scope, receive, send)
            return
        raw_key = header(scope, b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        if (problem := key_problem(raw_key)) is not None:
            await problem_response(
                400,
                "invalid_idempotency_key",
                problem,
                instance=scope["path"],
                errors=[{"in": "header", "name": HEADER, "detail": problem}],
            )(scope, receive, send)
            return
        key = raw_key.decode("ascii")

        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)

        principal = principal_of(scope)
        scope_id = f"tenant:{principal.tenant_id}" if principal else f"ip:{client_ip(scope)}"
        path = scope["path"] + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        fp = fingerprint(scope["method"], path, bytes(body))
        try:
            claim = await self.store.claim(scope_id, key, fp)
        except RedisError:
            # Executing without the record could run the side effect twice: refuse instead.
            log.warning("idempotency store unavailable", exc_info=True)
            await problem_response(
                503,
                "idempotency_unavailable",
                f"requests with an {HEADER} cannot be accepted right now; retry shortly",
                instance=scope["path"],
                headers={"Retry-After": "1"},
            )(scope, receive, send)
            return
        if claim.state == "mismatch":
            await problem_response(
                422,
                "idempotency_key_reused",
                f"this {HEADER} was already used for a different request; use a new key",
                instance=scope["path"],
            )(scope, receive, send)
            return
        if claim.state == "in_progress":
            await problem_response(
                409,
                "idempotency_in_progress",
                f"a request with this {HEADER} is still being processed; retry later",
                instance=scope["path"],
                headers={"Retry-After": "1"},
            )(scope, receive, send)
            return
        if claim.state == "replay":
            assert claim.response is not None
            await self._replay(claim.response, send)
            return

        await self._execute(scope, bytes(body), receive, send, scope_id, key, fp, claim.owner)

    @staticmethod
    async def _replay(stored: StoredResponse, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": stored.status,
                "headers": [*stored.headers, (b"idempotent-replayed", b"true")],
            }
        )
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})

    async def _execute(
        self,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
        scope_id: str,
        key: str,
        fp: str,
        owner: str,
    ) -> None:
        replayed = False

        async def receive_body() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # After the body the server's own receive reports the client leaving.
            return await receive()

        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        settled = False

        async def capture(message: Message) -> None:
            nonlocal status, headers, settled
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (bytes(k), bytes(v))
                    for k, v in message.get("headers", [])
                    if bytes(k).lower() not in _VOLATILE_HEADERS
                ]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and not settled:
                    # Stored before the last byte leaves, so a client retrying the moment it
                    # has the answer finds the record, not the claim.
                    settled = True
                    await self._settle(scope_id, key, fp, owner, status, headers, chunks)
            await send(message)

        try:
            await self.app(scope, receive_body, capture)
        finally:
            if not settled:
                try:
                    await self.store.release(scope_id, key, owner)
                except RedisError:
                    log.warning("could not release %s %s", scope_id, key, exc_info=True)

    async def _settle(
        self,
        scope_id: str,
        key: str,
        fp: str,
        owner: str,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
    ) -> None:
        try:
            if _storable(status):
                response = StoredResponse(status, headers, b"".join(chunks))
                await self.store.complete(scope_id, key, fp, owner, response)
            else:
                await self.store.release(scope_id, key, owner)
        except RedisError:
            # The client still gets its answer; the claim expires after claim_seconds.
            log.warning("could not store the response of %s %s", scope_id, key, exc_info=True)
