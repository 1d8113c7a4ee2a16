"""The web console in a real browser (Debian's chromium, driven by Playwright) against the fleet
`make run` starts: sign in, create a persona, watch a reply stream, reload mid-reply and get it
completed once, see a stated preference on the relationship page, see an event in the live
tail, upload documents and find one by search with its score parts, cancel an upload on its
way, approve and reject waiting
workflow steps and see the runs go on, attach a knowledge collection to a persona, and the admin
pages (a webhook's signing secret shown once, its delivery log, edited, its secret rotated). On every page axe-core must find
no serious or critical accessibility violation, and the page must run under its Content-Security-Policy without a
violation. A screenshot of each page is saved under `console-artifacts*/` in pytest's base
temporary directory (or $EDRS_CONSOLE_ARTIFACTS), printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from edrs_core.testing import CHROMIUM, CHROMIUM_ARGS
from playwright.async_api import Browser, Page, Route, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "console" / "node_modules" / "axe-core" / "axe.min.js"
# Replies are generated on CPU by the fleet's real model: generous, but a deadline.
REPLY_TIMEOUT_MS = 240_000
# A document is parsed and embedded on CPU by the fleet's real embedding model.
INGEST_TIMEOUT_MS = 240_000
# Runs move on Temporal's development server; approvals are re-read every 5 s by the page.
RUN_TIMEOUT_MS = 120_000
PASSWORD = secrets.token_urlsafe(16)
EMAIL = "console-admin@tenant.example"


@dataclass
class Session:
    page: Page
    gateway: str
    tenant_id: str
    artifacts: Path
    csp_violations: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.gateway}/console/{path}"

    async def api(self) -> httpx.AsyncClient:
        """A client of the same tenant's admin, to check what the console shows."""
        async with httpx.AsyncClient(base_url=self.gateway, timeout=30) as anonymous:
            login = await anonymous.post(
                "/api/v1/auth/token",
                json={"grantType": "password", "tenantId": self.tenant_id, "email": EMAIL,
                      "password": PASSWORD},
            )  # fmt: skip
        assert login.status_code == 200, login.text
        token = login.json()["accessToken"]
        return httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )


@pytest.fixture(scope="module")
def console_built() -> None:
    """`make console`: installs the npm packages and builds when anything changed (else no-op)."""
    result = subprocess.run(
        ["make", "console"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def tenant_id(fleet) -> str:
    made = fleet.edrs_in_fleet(
        "admin", "create-tenant", f"Console {secrets.token_hex(3)}", "--tier", "enterprise",
        "--admin-email", EMAIL, "--password-stdin", input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    found = re.search(r"^\s*id: (\S+)$", made.stdout, re.MULTILINE)
    assert found, made.stdout
    return found[1]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("EDRS_CONSOLE_ARTIFACTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("console-artifacts")


@pytest.fixture(scope="module")
def chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make install` installs chromium"
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=list(CHROMIUM_ARGS)
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def session(fleet, console_built, tenant_id, artifacts, browser) -> AsyncIterator[Session]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    s = Session(page, fleet.gateway_url, tenant_id, artifacts)
    page.on(
        "console",
        lambda m: s.csp_violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("request", lambda r: s.requests.append(r.url))
    yield s
    await context.close()
    print(f"\nconsole screenshots: {artifacts}")


async def check_page(s: Session, name: str) -> None:
    """axe-core on the page as it is (no serious or critical violation), a screenshot, and no
    Content-Security-Policy violation so far."""
    await s.page.screenshot(path=str(s.artifacts / f"{name}.png"), full_page=True)
    # Evaluated over the DevTools protocol, not as a <script>: the page's CSP stays as served.
    await s.page.evaluate(AXE.read_text())
    violations = await s.page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
             .map(v => ({id: v.id, impact: v.impact, help: v.help,
                         nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}))"""
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: {serious}"
    assert not s.csp_violations, s.csp_violations


async def watch_streaming(page: Page) -> None:
    """Record each distinct text of the streaming reply, as the user saw it change."""
    await page.evaluate(
        """() => {
             window.__steps = [];
             new MutationObserver(() => {
               const el = document.querySelector('[data-testid="streaming-reply"] .markdown');
               if (!el) return;
               const text = el.innerText.trim();
               const steps = window.__steps;
               if (text && text !== steps[steps.length - 1]) steps.push(text);
             }).observe(document.body, {subtree: true, childList: true, characterData: true});
           }"""
    )


async def wait_for_replies(page: Page, count: int) -> None:
    await page.wait_for_function(
        """(n) => !document.querySelector('[data-testid="streaming-reply"]')
                  && document.querySelectorAll('[data-testid="message"][data-role="assistant"]')
                       .length >= n""",
        arg=count,
        timeout=REPLY_TIMEOUT_MS,
    )


def words(text: str) -> list[str]:
    """The words of a text: what Markdown rendering keeps (markers and numbering aside)."""
    return re.findall(r"[A-Za-z]+", text)


async def send(page: Page, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_sign_in(session: Session) -> None:
    page = session.page
    await page.goto(session.url(""))
    await expect(page.get_by_role("heading", name="Sign in to EDRS")).to_be_visible()
    await check_page(session, "sign-in")
    await page.get_by_label("Tenant id").fill(session.tenant_id)
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("navigation", name="Console")).to_be_visible()
    await expect(page.get_by_role("heading", name="Chat", exact=True)).to_be_visible()


async def test_create_a_persona(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Personas").click()
    await page.get_by_label("Name").fill("Ada")
    await page.get_by_label("Role", exact=True).fill("Research analyst")
    await page.get_by_label("Skills (comma-separated)").fill("research, writing")
    await page.get_by_label("Tone").fill("warm")
    await page.get_by_role("button", name="Create persona").click()
    await expect(page.get_by_role("cell", name="Ada", exact=True)).to_be_visible()
    await check_page(session, "personas")
    api = await session.api()
    async with api:
        personas = (await api.get("/api/v1/personas")).json()["personas"]
    session.state["persona"] = next(p["id"] for p in personas if p["name"] == "Ada")


async def test_a_reply_streams_in_several_steps(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Chat").click()
    await page.get_by_label("Persona").select_option(session.state["persona"])
    await page.get_by_role("button", name="New conversation").click()
    await expect(page.get_by_label("Message", exact=True)).to_be_visible()
    session.state["conversation"] = page.url.rsplit("/", 1)[-1]
    await watch_streaming(page)
    await send(page, "Describe the sea in three sentences.")
    await expect(page.get_by_test_id("turn-status")).to_contain_text(
        "typing", timeout=REPLY_TIMEOUT_MS
    )
    await wait_for_replies(page, 1)
    steps = await page.evaluate("() => window.__steps")
    assert len(steps) >= 2, f"the reply appeared in {len(steps)} step(s): {steps}"
    # Each step extends the one before: text streams in, it is not replaced.
    assert all(b.startswith(a[: max(0, len(a) - 3)]) for a, b in itertools.pairwise(steps)), steps
    await check_page(session, "chat")


async def test_a_reload_mid_reply_resumes_and_completes_once(session: Session) -> None:
    page = session.page
    await watch_streaming(page)
    await send(page, "Tell me a long story about a lighthouse keeper, in many sentences.")
    await page.wait_for_function("() => window.__steps.length >= 1", timeout=REPLY_TIMEOUT_MS)
    before = len(session.requests)
    await page.reload()
    await wait_for_replies(page, 2)
    resumed = [u for u in session.requests[before:] if re.search(r"/messages/[0-9a-f-]+/events", u)]
    api = await session.api()
    async with api:
        persona, conversation = session.state["persona"], session.state["conversation"]
        stored = (
            await api.get(
                f"/api/v1/personas/{persona}/conversations/{conversation}/messages?pageSize=200"
            )
        ).json()["messages"]
    replies = [m for m in stored if m["role"] == "assistant"]
    assert len(replies) == 2 and len(stored) == 4, stored
    shown = page.locator('[data-testid="message"][data-role="assistant"] .markdown')
    await expect(shown).to_have_count(2)
    # Neither lost nor repeated: the words on the page are the stored reply's words.
    assert words(await shown.nth(1).inner_text()) == words(replies[1]["text"])
    assert words(await shown.nth(0).inner_text()) == words(replies[0]["text"])
    await expect(page.locator('[data-testid="message"][data-role="user"]')).to_have_count(2)
    assert resumed, "the reply finished before the page came back: nothing was resumed"


async def test_a_stated_preference_shows_on_the_relationship_page(session: Session) -> None:
    page = session.page
    await send(page, "I prefer bullet points in every answer.")
    await wait_for_replies(page, 3)
    await page.get_by_role("link", name="What they know").click()
    await page.get_by_label("Persona").select_option(session.state["persona"])
    await expect(page.get_by_test_id("preferences")).to_contain_text("bullet points")
    await expect(page.get_by_role("cell", name="preference", exact=True).first).to_be_visible()
    await check_page(session, "relationship")


async def test_persona_knowledge_collections(session: Session) -> None:
    page = session.page
    api = await session.api()
    async with api:
        made = await api.post(
            "/api/v1/knowledge/collections",
            json={"name": "ada-handbook", "description": "What Ada answers from"},
        )
        assert made.status_code == 201, made.text
        collection_id = made.json()["id"]
    await page.get_by_role("link", name="Personas").click()
    await page.get_by_role("button", name="Edit Ada").click()
    knowledge = page.get_by_role("region", name="Knowledge of Ada")
    await expect(knowledge.get_by_test_id("no-collections")).to_be_visible()
    await knowledge.get_by_label("Collection", exact=True).select_option(label="ada-handbook")
    await knowledge.get_by_role("button", name="Attach collection").click()
    await expect(knowledge.get_by_role("status")).to_have_text("ada-handbook attached to Ada.")
    attached = knowledge.get_by_role("list", name="Collections attached to Ada")
    await expect(attached).to_contain_text("ada-handbook")
    await check_page(session, "persona-knowledge")

    # Stored, not only shown: after a reload the table and the persona's editor both name it.
    await page.reload()
    ada = page.get_by_role("row").filter(has=page.get_by_role("cell", name="Ada", exact=True))
    await expect(ada.get_by_test_id("persona-collections")).to_have_text("ada-handbook")
    await page.get_by_role("button", name="Edit Ada").click()
    await expect(attached).to_contain_text("ada-handbook")
    async with await session.api() as api:
        persona = (await api.get(f"/api/v1/personas/{session.state['persona']}")).json()
    assert persona["knowledgeCollections"] == [collection_id]

    # Detached: gone from the persona, offered again by the picker.
    await knowledge.get_by_role("button", name="Detach ada-handbook").click()
    await expect(knowledge.get_by_test_id("no-collections")).to_be_visible()
    await expect(
        knowledge.get_by_label("Collection", exact=True).locator("option", has_text="ada-handbook")
    ).to_have_count(1)
    async with await session.api() as api:
        persona = (await api.get(f"/api/v1/personas/{session.state['persona']}")).json()
    assert persona["knowledgeCollections"] == []


async def test_an_event_appears_in_the_tail(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Events").click()
    await expect(page.get_by_test_id("events-state")).to_have_text("Stream: live")
    delivery = f"d-{uuid.uuid4().hex[:8]}"
    api = await session.api()
    async with api:
        published = await api.post(
            "/api/v1/events",
            json={
                "type": "integration.webhook_received",
                "payload": {"webhook_id": "wh-console", "delivery_id": delivery},
                "priority": "high",
            },
        )
    assert published.status_code == 202, published.text
    event_id = published.json()["eventId"]
    row = page.get_by_test_id("event-row").filter(has_text="integration.webhook_received")
    await expect(row.first).to_be_visible(timeout=60_000)
    await row.first.get_by_role("button").click()
    await expect(page.get_by_test_id("envelope")).to_contain_text(event_id)
    await expect(page.get_by_test_id("envelope")).to_contain_text(delivery)
    await check_page(session, "events")


async def test_work_tasks_with_their_timeline_budgets_and_usage(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Work").click()
    await expect(page.get_by_role("heading", name="Work", exact=True)).to_be_visible()
    await page.get_by_label("Title").fill("Summarise the quarter")
    await page.get_by_label("Description").fill("Two paragraphs for the board.")
    await page.get_by_role("button", name="Create task").click()
    row = page.get_by_test_id("task-row").filter(has_text="Summarise the quarter")
    await expect(row).to_have_count(1)
    await expect(page.get_by_test_id("task-status")).not_to_be_empty()
    await expect(page.get_by_test_id("timeline").locator("li").first).to_be_visible()
    await expect(page.get_by_role("heading", name="Usage by day")).to_be_visible()
    await check_page(session, "work")


LIGHTHOUSE = """# Lighthouse keeping

## Lamp care

The brass lamp of the Skerryvore lighthouse is polished every Tuesday with walnut oil and a
chamois cloth, never with vinegar.

## Fog signals

In fog the keeper sounds the horn twice a minute until the fog lifts.
"""
# The first bytes of a PNG image: uploaded fine, then refused by the parser (unsupported_format).
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)


async def test_knowledge_upload_search_and_delete(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Knowledge").click()
    await expect(page.get_by_role("heading", name="Knowledge", exact=True)).to_be_visible()
    await page.get_by_label("Collection name").fill("lighthouses")
    await page.get_by_label("Collection description").fill("Keeping lights")
    await page.get_by_role("button", name="Create collection").click()
    await expect(page.get_by_role("heading", name="Collection lighthouses")).to_be_visible()

    # Three files in one go, through the keyboard-accessible file input: a Markdown handbook, an
    # image (uploaded, then failed by the parser) and one the API refuses outright (its name, the
    # document's externalId, is over the 500 characters allowed).
    long_name = "n" * 510 + ".md"
    await page.get_by_label(re.compile(r"^Files to upload")).set_input_files(
        [
            {"name": "lighthouse-handbook.md", "mimeType": "text/markdown",
             "buffer": LIGHTHOUSE.encode()},
            {"name": "diagram.png", "mimeType": "image/png", "buffer": PNG},
            {"name": long_name, "mimeType": "text/markdown", "buffer": b"# Too long a name"},
        ]
    )  # fmt: skip
    uploads = page.get_by_test_id("upload")
    await expect(uploads).to_have_count(3)
    await expect(page.get_by_test_id("upload-summary")).to_have_text(
        "2 uploaded, 1 failed, 0 on their way.", timeout=60_000
    )
    refused = uploads.filter(has_text=long_name)
    await expect(refused).to_have_attribute("data-state", "failed")
    # The API's problem detail, as the gateway wrote it, under the file.
    await expect(refused).to_contain_text(re.compile(r"failed: .*externalId"))
    # And one more dropped on the page, as a file dragged from the desktop would be.
    dropped = await page.evaluate_handle(
        """() => {
             const files = new DataTransfer();
             files.items.add(new File(["# Keeper's log\\n\\nThe relief boat comes on Fridays."],
                                      "keepers-log.md", {type: "text/markdown"}));
             return files;
           }"""
    )
    await page.get_by_test_id("dropzone").dispatch_event("drop", {"dataTransfer": dropped})
    await expect(uploads).to_have_count(4)
    await expect(uploads.filter(has_text="keepers-log.md")).to_contain_text(
        "uploaded: created", timeout=60_000
    )
    handbook_upload = uploads.filter(has_text="lighthouse-handbook.md")
    await expect(handbook_upload).to_contain_text("uploaded: created")
    await expect(handbook_upload.get_by_role("progressbar")).to_have_js_property("value", 100)

    # Documents refresh by themselves until each is indexed or failed.
    rows = page.get_by_test_id("document-row")
    handbook = rows.filter(has_text="lighthouse-handbook.md")
    image = rows.filter(has_text="diagram.png")
    await expect(handbook).to_have_attribute("data-state", "indexed", timeout=INGEST_TIMEOUT_MS)
    await expect(image).to_have_attribute("data-state", "failed", timeout=INGEST_TIMEOUT_MS)
    await expect(rows.filter(has_text="keepers-log.md")).to_have_attribute(
        "data-state", "indexed", timeout=INGEST_TIMEOUT_MS
    )
    await expect(image.get_by_test_id("document-state")).to_contain_text(
        "failed (unsupported_format)"
    )
    await expect(page.get_by_test_id("documents-refresh")).to_have_text(
        "Every document is indexed or failed."
    )

    # Search it: the passage, its citation and the parts of its score.
    await page.get_by_label("Search query").fill("How is the brass lamp polished?")
    await page.get_by_role("checkbox", name="lighthouses").check()
    await page.get_by_label("Mode").select_option("hybrid")
    await page.get_by_label("Passages (k)").fill("3")
    await page.get_by_role("button", name="Search", exact=True).click()
    passage = page.get_by_test_id("passage").filter(has_text="walnut oil").first
    await expect(passage).to_be_visible(timeout=60_000)
    await expect(passage.get_by_test_id("citation")).to_contain_text("Lamp care")
    parts = passage.get_by_test_id("score-parts")
    for name in ("score", "vector", "keyword", "graph"):
        await expect(parts.locator("dt", has_text=re.compile(f"^{name}$"))).to_have_count(1)
    # Hybrid: found by both rankings, each with its rank.
    await expect(parts).to_contain_text(re.compile(r"vector\s*-?[0-9.]+ \(#\d+\)"))
    await expect(parts).to_contain_text(re.compile(r"keyword\s*[0-9.]+ \(#\d+\)"))
    api = await session.api()
    async with api:
        found = (
            await api.post(
                "/api/v1/knowledge/search",
                json={"query": "How is the brass lamp polished?", "collections": ["lighthouses"],
                      "k": 3, "mode": "hybrid"},
            )
        ).json()["passages"]  # fmt: skip
    top = found[0]
    assert "walnut oil" in top["text"], found
    await expect(page.get_by_test_id("passage").first).to_contain_text(top["text"].split("\n")[0])

    # The graph: extraction at ingestion named the lighthouse; its neighbourhood opens.
    await page.get_by_label("Entity name").fill("Skerryvore")
    await page.get_by_role("button", name="Find entities").click()
    found = page.get_by_role("list", name="Entities").get_by_role("button", name="Skerryvore")
    await expect(found.first).to_be_visible()
    await found.first.click()
    await expect(page.get_by_test_id("neighbourhood")).to_contain_text("Around Skerryvore")
    await check_page(session, "knowledge")

    # Delete the failed document: asked once more, then gone.
    await image.get_by_role("button", name="Delete diagram.png").click()
    await image.get_by_role("button", name="Yes, delete diagram.png").click()
    await expect(image).to_have_count(0)
    await expect(rows).to_have_count(2)
    async with await session.api() as api:
        listed = (await api.get("/api/v1/knowledge/documents?collection=lighthouses")).json()
    kept = sorted(d["externalId"] for d in listed["documents"])
    assert kept == ["keepers-log.md", "lighthouse-handbook.md"], listed


async def test_an_upload_cancelled_mid_way(session: Session) -> None:
    """Two files: one held on its way (the browser sent it; the network holds it, as a slow link
    would), cancelled there; the other goes on and is stored, the cancelled one is not."""
    page = session.page
    await expect(page.get_by_role("heading", name="Collection lighthouses")).to_be_visible()
    await page.get_by_role("button", name="Clear finished uploads").click()
    uploads = page.get_by_test_id("upload")
    await expect(uploads).to_have_count(0)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_one(route: Route) -> None:
        if b'filename="held-back.md"' not in (route.request.post_data_buffer or b""):
            await route.continue_()
            return
        held.set()
        await release.wait()
        # Never let through to the gateway. The page's abort has usually ended the route
        # already (Playwright then says it is handled): nothing is left to stop.
        with contextlib.suppress(PlaywrightError):
            await route.abort()

    await page.route("**/api/v1/knowledge/collections/*/files", hold_one)
    try:
        await page.get_by_label(re.compile(r"^Files to upload")).set_input_files(
            [
                {"name": "held-back.md", "mimeType": "text/markdown",
                 "buffer": b"# Held back\n\n" + b"The lamp is lit at dusk. " * 4000},
                {"name": "tides.md", "mimeType": "text/markdown",
                 "buffer": b"# Tides\n\nThe relief boat sails at high water."},
            ]
        )  # fmt: skip
        await asyncio.wait_for(held.wait(), timeout=60)
        cancelled = uploads.filter(has_text="held-back.md")
        await expect(cancelled).to_have_attribute("data-state", "uploading")
        cancel = cancelled.get_by_role("button", name="Cancel held-back.md")
        await expect(cancel).to_be_visible()
        await check_page(session, "knowledge-upload-cancel")
        await cancel.click()
        await expect(cancelled).to_have_attribute("data-state", "cancelled")
        await expect(cancelled.get_by_test_id("upload-status")).to_have_text("cancelled")
        await expect(cancel).to_have_count(0)
        await expect(uploads.filter(has_text="tides.md")).to_contain_text(
            "uploaded: created", timeout=60_000
        )
        await expect(page.get_by_test_id("upload-summary")).to_have_text(
            "1 uploaded, 0 failed, 1 cancelled, 0 on their way."
        )
    finally:
        release.set()
        await page.unroute("**/api/v1/knowledge/collections/*/files")
    rows = page.get_by_test_id("document-row")
    await expect(rows.filter(has_text="tides.md")).to_have_count(1)
    async with await session.api() as api:
        listed = (await api.get("/api/v1/knowledge/documents?collection=lighthouses")).json()
    kept = sorted(d["externalId"] for d in listed["documents"])
    assert kept == ["keepers-log.md", "lighthouse-handbook.md", "tides.md"], listed


async def start_waiting_run(api: httpx.AsyncClient, workflow: str, title: str) -> str:
    """Register `workflow` (an approval step for admins, then a one-second wait) and start it."""
    made = await api.post(
        "/api/v1/workflows",
        json={
            "name": workflow,
            "description": "console approvals",
            "spec": {
                "steps": [
                    {"id": "ok", "type": "approval", "with": {"role": "admin", "title": title}},
                    {"id": "after", "type": "wait", "dependsOn": ["ok"], "with": {"seconds": 1}},
                ]
            },
        },
    )
    assert made.status_code == 201, made.text
    run = await api.post("/api/v1/runs", json={"workflowName": workflow})
    assert run.status_code == 201, run.text
    return str(run.json()["id"])


async def test_approvals_on_the_work_page(session: Session) -> None:
    page = session.page
    async with await session.api() as api:
        approved_run = await start_waiting_run(api, "console-publish", "Publish the summary?")
        rejected_run = await start_waiting_run(api, "console-delete", "Delete the archive?")
    await page.get_by_role("link", name="Work").click()
    await expect(page.get_by_role("heading", name="Approvals waiting for me")).to_be_visible()
    publish = page.get_by_test_id("approval").filter(has_text="Publish the summary?")
    delete = page.get_by_test_id("approval").filter(has_text="Delete the archive?")
    # The page re-reads what waits every 5 s: both appear once their runs reach the step.
    await expect(publish).to_be_visible(timeout=RUN_TIMEOUT_MS)
    await expect(delete).to_be_visible(timeout=RUN_TIMEOUT_MS)
    await expect(publish).to_contain_text(approved_run)
    await check_page(session, "work-approvals")

    await publish.get_by_label("Reason (optional)").fill("Checked in the console")
    await publish.get_by_role("button", name="Approve").click()
    await expect(page.get_by_test_id("approval-notice")).to_have_text(
        "Approved: Publish the summary?"
    )
    await expect(publish).to_have_count(0)
    # The run goes on past the approval: its wait step runs, and it succeeds.
    run_row = page.get_by_test_id("run-row").filter(has_text="console-publish")
    await expect(run_row).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_test_id("run-steps")).to_contain_text(
        "after (wait): succeeded", timeout=RUN_TIMEOUT_MS
    )

    await delete.get_by_label("Reason (optional)").fill("Still needed")
    await delete.get_by_role("button", name="Reject").click()
    await expect(page.get_by_test_id("approval-notice")).to_have_text(
        "Rejected: Delete the archive?"
    )
    await expect(delete).to_have_count(0)
    rejected_row = page.get_by_test_id("run-row").filter(has_text="console-delete")
    await expect(rejected_row).to_have_attribute("data-status", "failed", timeout=RUN_TIMEOUT_MS)

    async with await session.api() as api:
        runs = {
            r: (await api.get(f"/api/v1/runs/{r}")).json() for r in (approved_run, rejected_run)
        }
        decided = {
            a["runId"]: a
            for a in (await api.get("/api/v1/approvals?pageSize=100")).json()["approvals"]
        }
    assert runs[approved_run]["status"] == "succeeded", runs[approved_run]
    assert runs[rejected_run]["status"] == "failed", runs[rejected_run]
    assert decided[approved_run]["status"] == "approved"
    assert decided[approved_run]["comment"] == "Checked in the console"
    assert decided[rejected_run]["status"] == "rejected"
    assert decided[rejected_run]["comment"] == "Still needed"


async def test_schedules_on_the_work_page(session: Session) -> None:
    page = session.page
    async with await session.api() as api:
        made = await api.post(
            "/api/v1/workflows",
            json={"name": "console-yearly", "description": "console schedules",
                  "spec": {"steps": [{"id": "pause", "type": "wait", "with": {"seconds": 1}}]}},
        )  # fmt: skip
        assert made.status_code == 201, made.text
    await page.get_by_role("link", name="Work").click()
    await expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
    # The page may have been open before the workflow was registered: read the lists again.
    await page.get_by_role("button", name="Refresh schedules and workflows").click()
    form = page.get_by_role("form", name="Schedule a workflow")
    await form.get_by_label("Workflow").select_option("console-yearly")
    # New Year's Day at midnight in Tokyo: listed with its next run times, and never reached
    # while the test runs.
    await form.get_by_label("Cron expression").fill("0 0 1 1 *")
    await form.get_by_label("Time zone (IANA)").fill("Asia/Tokyo")
    await form.get_by_label("Note").fill("console schedule")
    await form.get_by_role("button", name="Create schedule").click()
    await expect(page.get_by_test_id("schedule-notice")).to_have_text(
        "console-yearly scheduled at 0 0 1 1 * (Asia/Tokyo)."
    )
    # By its workflow: pausing and resuming replace the schedule's note (Temporal's), as the API says.
    row = page.get_by_test_id("schedule-row").filter(has_text="console-yearly")
    await expect(row).to_have_count(1)
    await expect(row.get_by_test_id("schedule-next").locator("time").first).to_be_visible()
    await check_page(session, "work-schedules")
    async with await session.api() as api:
        listed = (await api.get("/api/v1/schedules")).json()["schedules"]
    schedule = next(s for s in listed if s["note"] == "console schedule")
    assert (schedule["workflowName"], schedule["cron"], schedule["timeZone"]) == (
        "console-yearly", "0 0 1 1 *", "Asia/Tokyo",
    )  # fmt: skip
    assert schedule["nextRunTimes"], schedule

    # Paused: no next run times; resumed: they are back.
    await row.get_by_role("button", name="Pause schedule of console-yearly at 0 0 1 1 *").click()
    await expect(row.get_by_test_id("schedule-next")).to_have_text("paused")
    await row.get_by_role("button", name="Resume schedule of console-yearly at 0 0 1 1 *").click()
    await expect(row.get_by_test_id("schedule-next").locator("time").first).to_be_visible()
    await expect(row).to_contain_text("resumed")

    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Delete schedule of console-yearly at 0 0 1 1 *").click()
    await expect(row).to_have_count(0)
    async with await session.api() as api:
        gone = await api.get(f"/api/v1/schedules/{schedule['id']}")
    assert gone.status_code == 404, gone.text


async def test_the_admin_pages(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Users").click()
    await expect(page.get_by_role("cell", name=EMAIL, exact=True)).to_be_visible()
    await check_page(session, "admin-users")

    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name").fill("console test key")
    await page.get_by_role("button", name="Create key").click()
    shown = page.get_by_test_id("new-api-key")
    await expect(shown).to_have_value(re.compile(r"^edrs_"))
    secret = await shown.input_value()
    await check_page(session, "admin-api-keys")
    await page.get_by_role("button", name="I stored it").click()
    await expect(page.get_by_role("cell", name="console test key", exact=True)).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("cell", name="console test key", exact=True)).to_be_visible()
    assert secret not in await page.content()  # shown once only

    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("cell", name="api_key.created").first).to_be_visible()
    await check_page(session, "admin-audit")


WEBHOOK_URL = "https://hooks.example.com/edrs-console"


async def test_admin_webhooks_secret_once_and_delivery_log(session: Session) -> None:
    page = session.page
    await page.get_by_role("link", name="Webhooks").click()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await page.get_by_label("Receiver URL").fill(WEBHOOK_URL)
    await page.get_by_label("Event types").fill("persona.*")
    await page.get_by_label("Description").fill("console test")
    await page.get_by_role("button", name="Create webhook").click()
    shown = page.get_by_test_id("new-webhook-secret")
    await expect(shown).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/=]+$"))
    secret = await shown.input_value()
    row = page.get_by_test_id("webhook-row").filter(has_text=WEBHOOK_URL)
    await expect(row).to_have_count(1)
    await check_page(session, "admin-webhooks")
    await page.get_by_role("button", name="I stored it").click()
    await expect(shown).to_have_count(0)
    assert secret not in await page.content()
    await page.reload()
    await expect(row).to_have_count(1)
    assert secret not in await page.content()  # shown once only
    async with await session.api() as api:
        listed = (await api.get("/api/v1/webhooks")).json()["webhooks"]
        assert secret not in str(listed)
        webhook = next(w for w in listed if w["url"] == WEBHOOK_URL)
        assert webhook["eventTypes"] == ["persona.*"]
        # An event the subscription matches: one delivery, tried at once (the receiver is not
        # reachable from the test machine, or answers what it answers: either is an attempt).
        made = await api.post(
            "/api/v1/personas", json={"name": "Hook", "role": "Delivery witness", "skills": []}
        )
        assert made.status_code == 201, made.text

    await row.get_by_role("button", name=f"Deliveries of {WEBHOOK_URL}").click()
    log = page.get_by_role("region", name=f"Delivery log of {WEBHOOK_URL}")
    delivery = log.get_by_test_id("delivery-row").filter(has_text="persona.persona_created")
    await expect(delivery).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    await expect(delivery.get_by_test_id("delivery-answer")).to_have_text(
        re.compile(r"^(HTTP \d{3}|no answer)"), timeout=RUN_TIMEOUT_MS
    )
    await expect(delivery.get_by_test_id("delivery-state")).to_have_text(
        re.compile(r"^(pending|succeeded|dead)$")
    )
    await check_page(session, "admin-webhook-deliveries")

    # Edited: the description changed and the webhook disabled, as the API then says.
    await row.get_by_role("button", name=f"Edit webhook {WEBHOOK_URL}").click()
    edit = page.get_by_role("form", name=f"Edit webhook {WEBHOOK_URL}")
    await edit.get_by_label("Description").fill("console test, edited")
    await edit.get_by_role("checkbox", name=re.compile("Enabled")).uncheck()
    await check_page(session, "admin-webhook-edit")
    await edit.get_by_role("button", name="Save changes").click()
    notice = page.get_by_test_id("webhook-notice")
    saved = page.get_by_text(f"Webhook to {WEBHOOK_URL} updated.", exact=True)
    await expect(saved.or_(edit.get_by_role("alert"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # Saved (the form closes), not refused (the form would show the API's problem).
    assert await notice.inner_text() == f"Webhook to {WEBHOOK_URL} updated.", (
        await edit.inner_text()
    )
    await expect(edit).to_have_count(0)
    await expect(row.get_by_test_id("webhook-description")).to_have_text("console test, edited")
    await expect(row.get_by_test_id("webhook-enabled")).to_have_text("no")

    # The secret rotated: a new one, shown once, and the time the old one verifies until.
    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name=f"Rotate secret of {WEBHOOK_URL}").click()
    await expect(shown).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/=]+$"))
    rotated = await shown.input_value()
    assert rotated != secret
    await expect(
        page.get_by_role("heading", name=re.compile("^New signing secret of"))
    ).to_be_visible()
    await expect(page.get_by_test_id("previous-secret-until").locator("time")).to_be_visible()
    await expect(row.get_by_test_id("previous-secret")).to_contain_text(
        "previous secret verifies until"
    )
    await check_page(session, "admin-webhook-rotated")
    await page.get_by_role("button", name="I stored it").click()
    await expect(shown).to_have_count(0)
    assert rotated not in await page.content()
    await page.reload()
    await expect(row.get_by_test_id("previous-secret")).to_be_visible()
    assert rotated not in await page.content()  # shown once only
    async with await session.api() as api:
        now = (await api.get(f"/api/v1/webhooks/{webhook['id']}")).json()
    assert rotated not in str(now) and secret not in str(now)
    assert now["description"] == "console test, edited" and now["enabled"] is False, now
    until = datetime.fromisoformat(now["previousSecretExpiresAt"])
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24), now

    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name=f"Delete webhook {WEBHOOK_URL}").click()
    await expect(row).to_have_count(0)
    await expect(log).to_have_count(0)
    async with await session.api() as api:
        gone = await api.get(f"/api/v1/webhooks/{webhook['id']}")
    assert gone.status_code == 404, gone.text


async def test_sign_out(session: Session) -> None:
    page = session.page
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to EDRS")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to EDRS")).to_be_visible()
