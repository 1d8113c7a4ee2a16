"""Web console benchmark: a 2,000-message conversation in Debian's chromium, and typing while a
reply streams.

Run `python benchmarks/bench_console.py` (after `make console`; `make bench` does both). It starts
the fleet as `make run` does (`edrs dev up`, its own state dir), creates a persona and one real
turn through the API, then adds 1,998 earlier messages to that conversation in the persona
service's database (as bench_conversation.py seeds memory: 2,000 model turns would take hours on
CPU). In the browser (Playwright, /usr/bin/chromium) it measures:

- time to first render: from navigation start to the first message row painted, and to the
  whole history loaded (every page of 200 read, the list scrolled to its end);
- input latency while a reply streams: for each key typed into the message box while the real
  model streams a reply, the time from the key event to the next frame (p50/p95);
- the bundle: bytes of each built asset, raw and gzipped.

A Playwright trace of the run is saved beside the state dir (`trace.zip`, open it with
`playwright show-trace`). It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from edrs_core.testing import CHROMIUM, CHROMIUM_ARGS
from edrs_gateway.console.static import default_console_dir
from edrs_gateway.identity.bootstrap import DEV_ADMIN_PASSWORD
from playwright.async_api import async_playwright

HISTORY = 2_000
KEYS = 40
EDRS = [str(Path(sys.executable).parent / "edrs")]


def fleet_status(state_dir: Path) -> list[dict[str, object]] | None:
    result = subprocess.run(
        [*EDRS, "dev", "status", "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def start_fleet(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        up = subprocess.Popen(
            [*EDRS, "dev", "up", "--state-dir", str(state_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"`edrs dev up` exited early:\n{log.read_text(errors='replace')}")
        rows = fleet_status(state_dir)
        if rows and all(r["ready"] for r in rows):
            return up
        with contextlib.suppress(subprocess.TimeoutExpired):
            up.wait(1.0)  # the poll interval, returning at once if `up` exits
    raise SystemExit("the fleet was not ready within 300 s")


async def seed(gateway: str, state_dir: Path) -> tuple[str, str, str, str]:
    """The dev admin's tenant and token, a persona, and a conversation of HISTORY messages."""
    async with httpx.AsyncClient(base_url=gateway, timeout=300) as api:
        where = (await api.get("/api/v1/auth/development-login")).json()
        login = await api.post(
            "/api/v1/auth/token",
            json={"grantType": "password", "tenantId": where["tenantId"],
                  "email": where["email"], "password": DEV_ADMIN_PASSWORD},
        )  # fmt: skip
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        persona = await api.post(
            "/api/v1/personas",
            headers=headers,
            json={"name": "Bench", "role": "Storyteller", "instructions": "Answer at length."},
        )
        persona.raise_for_status()
        persona_id = persona.json()["id"]
        conversation = "long-history"
        turn = await api.post(
            f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
            headers=headers,
            json={"text": "Hello.", "options": {"maxTokens": 16}},
        )
        turn.raise_for_status()
    fleet = json.loads((state_dir / "fleet.json").read_text())
    port = fleet["engines"]["postgres"]["port"]
    db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/edrs_persona")
    try:
        row = await db.fetchrow(
            "SELECT client_id, user_id FROM conversations WHERE persona_id = $1 AND id = $2",
            uuid.UUID(persona_id),
            conversation,
        )
        start = datetime.now(UTC) - timedelta(days=30)
        rows = [
            (
                uuid.uuid4(), row["client_id"], uuid.UUID(persona_id), row["user_id"],
                conversation, "user" if i % 2 == 0 else "assistant",
                f"Message {i}: " + ("a line of **markdown** text, " * (1 + i % 7)),
                start + timedelta(seconds=i),
            )
            for i in range(HISTORY - 2)
        ]  # fmt: skip
        await db.copy_records_to_table(
            "messages",
            records=rows,
            columns=["id", "client_id", "persona_id", "user_id", "conversation_id", "role",
                     "text", "created_at"],
        )  # fmt: skip
        await db.execute(
            "UPDATE conversations SET message_count = message_count + $3 "
            "WHERE persona_id = $1 AND id = $2",
            uuid.UUID(persona_id),
            conversation,
            len(rows),
        )
    finally:
        await db.close()
    return where["tenantId"], where["email"], persona_id, conversation


async def measure(gateway: str, who: tuple[str, str, str, str], trace: Path) -> None:
    tenant_id, email, persona_id, conversation = who
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS)
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.tracing.start(screenshots=True, snapshots=True)
        page = await context.new_page()
        await page.goto(f"{gateway}/console/")
        await page.get_by_label("Tenant id").fill(tenant_id)
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill(DEV_ADMIN_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("navigation", name="Console").wait_for()

        first, loaded = [], []
        for _ in range(5):
            await page.goto(f"{gateway}/console/chat/{persona_id}/{conversation}")
            await page.locator('[data-testid="message"]').first.wait_for()
            first.append(await page.evaluate("() => performance.now()"))
            await page.wait_for_function(
                "() => document.querySelector('[role=log]')?.getAttribute('aria-busy') === 'false'",
                timeout=120_000,
            )
            loaded.append(await page.evaluate("() => performance.now()"))
        rows = await page.locator('[data-testid="message"]').count()
        print(
            f"  2,000-message conversation, first message painted   median {statistics.median(first):7.0f} ms (5 loads)"
        )
        print(
            f"  2,000-message conversation, all pages loaded        median {statistics.median(loaded):7.0f} ms"
        )
        print(f"  message rows in the DOM (virtualised)               {rows}")

        # Typing while a reply streams: key event to the next frame.
        await page.evaluate(
            """() => {
                 window.__lat = [];
                 const box = document.getElementById('message');
                 box.addEventListener('keydown', (e) => {
                   const t0 = e.timeStamp;
                   requestAnimationFrame(() => setTimeout(() => window.__lat.push(performance.now() - t0)));
                 });
               }"""
        )
        box = page.get_by_label("Message", exact=True)
        await box.fill("Tell me a long story about the sea, in many sentences.")
        await page.get_by_role("button", name="Send").click()
        # From the moment the reply's row exists (queued, typing, then text) until it completes.
        await page.locator('[data-testid="streaming-reply"]').wait_for(timeout=60_000)
        typed = 0
        while typed < KEYS and await page.locator('[data-testid="streaming-reply"]').count():
            await box.press("a")
            typed += 1
        latencies = await page.evaluate("() => window.__lat")
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            print(
                f"  input latency while streaming ({len(latencies)} keys)       p50 {cuts[49]:7.1f} ms   p95 {cuts[94]:7.1f} ms"
            )
        else:
            print("  input latency while streaming: the reply ended before keys could be typed")
        await context.tracing.stop(path=str(trace))
        await browser.close()


def bundle() -> None:
    assets = sorted((default_console_dir() / "assets").iterdir())
    total = total_gz = 0
    for asset in assets:
        raw = asset.read_bytes()
        gz = len(gzip.compress(raw, 9))
        total, total_gz = total + len(raw), total_gz + gz
        print(f"  {asset.name:<40} {len(raw) / 1024:8.1f} KiB   gzip {gz / 1024:7.1f} KiB")
    print(f"  {'bundle total':<40} {total / 1024:8.1f} KiB   gzip {total_gz / 1024:7.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    if not (default_console_dir() / "index.html").exists():
        raise SystemExit("the console is not built: run `make console`")
    print("console bundle")
    bundle()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="edrs-bench-console-")) / "state"
    up = start_fleet(state_dir, state_dir.with_name("up.log"))
    try:
        rows = fleet_status(state_dir) or []
        gateway = next(f"http://{r['http']}" for r in rows if r["name"] == "gateway")
        who = asyncio.run(seed(gateway, state_dir))
        print("console in chromium")
        asyncio.run(measure(gateway, who, state_dir.with_name("trace.zip")))
        print(f"  trace: {state_dir.with_name('trace.zip')}")
    finally:
        subprocess.run([*EDRS, "dev", "down", "--state-dir", str(state_dir)], check=False)
        up.wait(120)


if __name__ == "__main__":
    main()
