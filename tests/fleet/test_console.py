"""The web console in a real browser (Debian's chromium, driven by Playwright) against the fleet
`make run` starts: sign in, create a persona, watch a reply stream, reload mid-reply and get it
completed once, see a stated preference on the relationship page, see an event in the live
tail, and the admin pages. On every page axe-core must find no serious or critical
accessibility violation, and the page must run under its Content-Security-Policy without a
violation. A screenshot of each page is saved under `console-artifacts*/` in pytest's base
temporary directory (or $EDRS_CONSOLE_ARTIFACTS), printed at the end of the module.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from edrs_core.testing import CHROMIUM, CHROMIUM_ARGS
from playwright.async_api import Browser, Page, async_playwright, expect

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "console" / "node_modules" / "axe-core" / "axe.min.js"
# Replies are generated on CPU by the fleet's real model: generous, but a deadline.
REPLY_TIMEOUT_MS = 240_000
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
            base_url=self.gateway, headers={"Authorization": f"Bearer {token}"}, timeout=60
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


async def test_sign_out(session: Session) -> None:
    page = session.page
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to EDRS")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to EDRS")).to_be_visible()
