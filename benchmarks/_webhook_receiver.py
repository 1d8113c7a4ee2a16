"""The webhook receiver of bench_integration.py: `python _webhook_receiver.py PORT`.

A bare ASGI app on uvicorn (its C HTTP parser), so that it is not what limits the rate. Every
delivery to /hooks/NAME is verified with the `standardwebhooks` library and the secret set for
NAME; the receiver notes the `webhook-id`, the body's `id` and the wall-clock time it arrived.

Control (JSON): POST /control/secret {"name", "secret"}; GET /control/stats/NAME (count,
distinct ids, refused, and [id, time] of each verified delivery); POST /control/reset/NAME.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Hook:
    def __init__(self, secret: str) -> None:
        self.verifier = Webhook(secret)
        self.reset()

    def reset(self) -> None:
        self.receipts: list[tuple[str, float]] = []
        self.webhook_ids: set[str] = set()
        self.refused = 0


hooks: dict[str, Hook] = {}


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def answer(send: Any, status: int, payload: Any = None) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")] if body else [],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    arrived = time.time()
    path: str = scope["path"]
    if path.startswith("/hooks/"):
        hook = hooks.get(path.removeprefix("/hooks/"))
        if hook is None:
            await answer(send, 404)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            payload = hook.verifier.verify(body, headers)
        except WebhookVerificationError:
            hook.refused += 1
            await answer(send, 401)
            return
        hook.receipts.append((str(payload["id"]), arrived))
        hook.webhook_ids.add(headers["webhook-id"])
        await answer(send, 204)
    elif path == "/control/secret":
        given = json.loads(body)
        hooks[given["name"]] = Hook(given["secret"])
        await answer(send, 204)
    elif path.startswith("/control/stats/"):
        hook = hooks[path.removeprefix("/control/stats/")]
        await answer(
            send,
            200,
            {
                "count": len(hook.receipts),
                "distinct": len(hook.webhook_ids),
                "refused": hook.refused,
                "receipts": hook.receipts if "full=1" in scope["query_string"].decode() else [],
            },
        )
    elif path.startswith("/control/reset/"):
        hooks[path.removeprefix("/control/reset/")].reset()
        await answer(send, 204)
    else:
        await answer(send, 404)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
    )
