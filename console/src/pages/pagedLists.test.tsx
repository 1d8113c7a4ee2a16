// "Load more" on every list the API pages (webhooks, their delivery log, users, API keys,
// approvals, schedules, budgets, a task's timeline, conversations): each page read against a fake
// gateway that answers two items a page, the next page's rows added below after the click, and a
// refresh reading every page opened again so the list never shrinks.
import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import { AdminApiKeysPage } from "./AdminApiKeys";
import { AdminUsersPage } from "./AdminUsers";
import { AdminWebhooksPage } from "./AdminWebhooks";
import { ChatPage } from "./Chat";
import { WorkPage } from "./Work";

const at = "2025-01-01T12:00:00Z";
const PAGE = 2;
type Row = { id: string; [field: string]: unknown };
type Lists = Record<string, { field: string; items: Row[] }>;
type Other = (method: string, path: string, body: unknown) => Response | undefined;

const answer = (status: number, body?: unknown) =>
  body === undefined
    ? new Response(null, { status })
    : new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/**
 * A fake gateway: each list of `lists` (by path) is answered `PAGE` items a page whatever the
 * `pageSize` asked, its `nextPageToken` the index of the next item ("" on the last page); a
 * DELETE of `<list>/<id>` removes the item; `other` answers the rest.
 */
function gateway(lists: Lists, other: Other = () => undefined) {
  const asked: string[] = [];
  const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
    const u = new URL(String(url), "http://x");
    const method = init?.method ?? "GET";
    const body = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    const list = lists[u.pathname];
    if (method === "GET" && list) {
      asked.push(`${u.pathname}${u.search}`);
      const start = Number(u.searchParams.get("pageToken") || "0");
      const next = start + PAGE < list.items.length ? String(start + PAGE) : "";
      return answer(200, { [list.field]: list.items.slice(start, start + PAGE), nextPageToken: next });
    }
    const cut = u.pathname.lastIndexOf("/");
    const owner = lists[u.pathname.slice(0, cut)];
    if (method === "DELETE" && owner) {
      const id = u.pathname.slice(cut + 1);
      owner.items.splice(owner.items.findIndex((i) => i.id === id), 1);
      return answer(204);
    }
    return other(method, `${u.pathname}${u.search}`, body) ?? answer(404, { status: 404, detail: u.pathname });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  return { api: new ApiClient(store, "", fetcher as typeof fetch), asked };
}

/** Requests of `path`'s list (page by page) made since `from`. */
const readsOf = (asked: string[], path: string, from = 0) => asked.slice(from).filter((a) => a.split("?")[0] === path);

afterEach(() => {
  cleanup();
  vi.restoreAllMocks();
});

describe("Load more on the admin pages", () => {
  it("users: the next page after the click, and a deletion re-reads both pages", async () => {
    const users: Row[] = [1, 2, 3, 4, 5].map((n) => ({
      id: `u${n}`, email: `user${n}@acme.example`, displayName: `User ${n}`, role: "member", lockedUntil: null, createdAt: at,
    }));
    const { api, asked } = gateway({ "/api/v1/users": { field: "users", items: users } });
    render(<ApiProvider client={api}><AdminUsersPage /></ApiProvider>);
    await screen.findByText("user2@acme.example");
    expect(screen.queryByText("user3@acme.example")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Load more users" }));
    await screen.findByText("user4@acme.example");
    expect(screen.getByText("user1@acme.example")).toBeTruthy();
    expect(asked).toContain("/api/v1/users?pageSize=200&pageToken=2");

    vi.spyOn(window, "confirm").mockReturnValue(true);
    const from = asked.length;
    fireEvent.click(screen.getByRole("button", { name: "Delete user user1@acme.example" }));
    // Both pages read again: user5 moved up to the second page and shows; none opened is lost.
    await screen.findByText("user5@acme.example");
    expect(screen.queryByText("user1@acme.example")).toBeNull();
    for (const n of [2, 3, 4]) expect(screen.getByText(`user${n}@acme.example`)).toBeTruthy();
    expect(readsOf(asked, "/api/v1/users", from)).toEqual(["/api/v1/users?pageSize=200", "/api/v1/users?pageSize=200&pageToken=2"]);
    expect(screen.queryByRole("button", { name: /Load more/ })).toBeNull();
  });

  it("API keys: the next page after the click, and a revocation re-reads both pages", async () => {
    const keys: Row[] = [1, 2, 3, 4, 5].map((n) => ({
      id: `k${n}`, name: `key ${n}`, prefix: `edrs_k${n}`, role: "integrator", scopes: [], lastUsedAt: null, expiresAt: null, createdAt: at,
    }));
    const { api, asked } = gateway({ "/api/v1/api-keys": { field: "apiKeys", items: keys } });
    render(<ApiProvider client={api}><AdminApiKeysPage /></ApiProvider>);
    await screen.findByText("key 2");
    expect(screen.queryByText("key 3")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Load more API keys" }));
    await screen.findByText("key 4");

    vi.spyOn(window, "confirm").mockReturnValue(true);
    const from = asked.length;
    fireEvent.click(screen.getByRole("button", { name: "Revoke key key 1" }));
    await screen.findByText("key 5");
    expect(screen.queryByText("key 1")).toBeNull();
    for (const n of [2, 3, 4]) expect(screen.getByText(`key ${n}`)).toBeTruthy();
    expect(readsOf(asked, "/api/v1/api-keys", from)).toHaveLength(2);
  });

  it("webhooks and a webhook's delivery log: each pages on its own; a refresh keeps both pages", async () => {
    const webhooks: Row[] = [1, 2, 3, 4, 5].map((n) => ({
      id: `w${n}`, url: `https://hooks.example.com/${n}`, eventTypes: ["task.*"], description: "", enabled: true,
      previousSecretExpiresAt: null, createdAt: at, updatedAt: at,
    }));
    const deliveries: Row[] = [1, 2, 3].map((n) => ({
      id: `msg_${n}`, eventId: `e${n}`, eventType: `task.event_${n}`, state: "succeeded", nextAttemptAt: null, createdAt: at,
      attempts: [{ number: 1, attemptedAt: at, statusCode: 200, error: "", latencyMs: 5 }],
    }));
    const { api, asked } = gateway({
      "/api/v1/webhooks": { field: "webhooks", items: webhooks },
      "/api/v1/webhooks/w2/deliveries": { field: "deliveries", items: deliveries },
    });
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("https://hooks.example.com/2");
    expect(screen.queryByText("https://hooks.example.com/3")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Load more webhooks" }));
    await screen.findByText("https://hooks.example.com/4");

    vi.spyOn(window, "confirm").mockReturnValue(true);
    fireEvent.click(screen.getByRole("button", { name: "Delete webhook https://hooks.example.com/1" }));
    await screen.findByText("https://hooks.example.com/5");
    expect(screen.queryByText("https://hooks.example.com/1")).toBeNull();
    expect(screen.getByText("https://hooks.example.com/3")).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: "Deliveries of https://hooks.example.com/2" }));
    const log = within(screen.getByRole("region", { name: /Delivery log of/ }));
    await waitFor(() => expect(log.getAllByTestId("delivery-row")).toHaveLength(2));
    fireEvent.click(log.getByRole("button", { name: "Load more deliveries" }));
    await waitFor(() => expect(log.getAllByTestId("delivery-row")).toHaveLength(3));
    expect(log.queryByRole("button", { name: /Load more/ })).toBeNull();

    // The second page's delivery changes; Refresh reads both pages again.
    deliveries[2] = { ...deliveries[2], state: "dead" };
    const from = asked.length;
    fireEvent.click(log.getByRole("button", { name: "Refresh" }));
    await log.findByRole("button", { name: "Replay delivery msg_3" });
    expect(log.getAllByTestId("delivery-row")).toHaveLength(3);
    expect(readsOf(asked, "/api/v1/webhooks/w2/deliveries", from)).toEqual([
      "/api/v1/webhooks/w2/deliveries?pageSize=50", "/api/v1/webhooks/w2/deliveries?pageSize=50&pageToken=2",
    ]);

    // Another state filter starts again from its first page.
    fireEvent.change(log.getByLabelText("State"), { target: { value: "dead" } });
    await waitFor(() => expect(asked.at(-1)).toBe("/api/v1/webhooks/w2/deliveries?pageSize=50&state=dead"));
  });
});

/** The Work page's lists behind one fake gateway (task t1 running, so it can be cancelled). */
function workGateway() {
  const approvals: Row[] = [1, 2, 3, 4, 5].map((n) => ({
    id: `a${n}`, role: "editor", title: `Approval ${n}?`, details: {}, status: "pending", onExpiry: "fail", expiresAt: at,
    decidedBy: "", comment: "", decidedAt: null, runId: "", stepId: "", requestedBy: "task", createdAt: at,
  }));
  const schedules: Row[] = [1, 2, 3].map((n) => ({
    id: `s${n}`, workflowName: `flow${n}`, workflowVersion: 1, cron: "0 9 * * *", timeZone: "UTC", input: {}, paused: false,
    note: `note ${n}`, nextRunTimes: [], createdAt: at,
  }));
  const budgets: Row[] = [1, 2, 3].map((n) => ({
    id: `b${n}`, scope: "persona", scopeId: `persona-${n}`, maxTokens: 1000 * n, maxToolCalls: 0, maxCostMicros: 0, onExceed: "refuse",
    used: { tokens: n, toolCalls: 0, costMicros: 0 }, reserved: { tokens: 0, toolCalls: 0, costMicros: 0 },
  }));
  const entries: Row[] = [1, 2, 3].map((n) => ({
    id: `e${n}`, kind: "note", fromStatus: null, toStatus: null, note: `step ${n}`, actor: "task", createdAt: at,
  }));
  const task = {
    id: "t1", title: "Write the report", description: "", assigneePersonaId: null, status: "running", priority: 3, dueAt: null,
    workflowRunId: "", parentTaskId: null, assignmentReason: "", outcome: "", createdAt: at, updatedAt: at,
  };
  const lists: Lists = {
    "/api/v1/tasks": { field: "tasks", items: [task] },
    "/api/v1/tasks/t1/timeline": { field: "entries", items: entries },
    "/api/v1/approvals": { field: "approvals", items: approvals },
    "/api/v1/runs": { field: "runs", items: [] },
    "/api/v1/schedules": { field: "schedules", items: schedules },
    "/api/v1/workflows": { field: "workflows", items: [] },
    "/api/v1/budgets": { field: "budgets", items: budgets },
    "/api/v1/personas": { field: "personas", items: [] },
  };
  const fake = gateway(lists, (method, path, body) => {
    if (method === "GET" && path === "/api/v1/tasks/t1") return answer(200, task);
    if (method === "GET" && path === "/api/v1/usage") return answer(200, { rows: [] });
    if (method === "POST" && path === "/api/v1/tasks/t1/cancel") {
      task.status = "cancelled";
      entries.push({ id: "e4", kind: "status", fromStatus: "running", toStatus: "cancelled", note: "", actor: "console", createdAt: at });
      return answer(200, task);
    }
    const decided = path.match(/^\/api\/v1\/approvals\/(\w+)\/decision$/);
    if (method === "POST" && decided) {
      const index = approvals.findIndex((a) => a.id === decided[1]);
      const [taken] = approvals.splice(index, 1);
      return answer(200, { ...taken, status: (body as { approve: boolean }).approve ? "approved" : "rejected" });
    }
    return undefined;
  });
  return { ...fake, approvals, schedules, budgets, entries };
}

describe("Load more on the Work page", () => {
  it("approvals: the next page after the click; a decision re-reads the pages opened", async () => {
    const { api, asked } = workGateway();
    render(<ApiProvider client={api}><WorkPage /></ApiProvider>);
    await waitFor(() => expect(screen.getAllByTestId("approval")).toHaveLength(2));
    fireEvent.click(screen.getByRole("button", { name: "Load more approvals" }));
    await waitFor(() => expect(screen.getAllByTestId("approval")).toHaveLength(4));
    expect(asked).toContain("/api/v1/approvals?forMe=true&status=pending&pageSize=100&pageToken=2");

    const from = asked.length;
    const first = screen.getAllByTestId("approval").find((c) => c.textContent?.includes("Approval 1?"))!;
    fireEvent.click(within(first).getByRole("button", { name: "Approve" }));
    // Both pages read again: the decided one leaves, Approval 5 moves up into the second page.
    const titles = () => screen.getAllByTestId("approval").map((c) => c.querySelector("h3")?.textContent);
    await waitFor(() => expect(titles()).toEqual(["Approval 2?", "Approval 3?", "Approval 4?", "Approval 5?"]));
    expect(readsOf(asked, "/api/v1/approvals", from)).toEqual(
      expect.arrayContaining(["/api/v1/approvals?forMe=true&status=pending&pageSize=100&pageToken=2"]),
    );
    expect(screen.queryByRole("button", { name: "Load more approvals" })).toBeNull();
  });

  it("schedules and budgets: the next page after the click; Refresh keeps both pages", async () => {
    const { api, asked, schedules, budgets } = workGateway();
    render(<ApiProvider client={api}><WorkPage /></ApiProvider>);
    await waitFor(() => expect(screen.getAllByTestId("schedule-row")).toHaveLength(2));
    fireEvent.click(screen.getByRole("button", { name: "Load more schedules" }));
    await screen.findByText("note 3");
    schedules[2] = { ...schedules[2], note: "note 3, edited" };
    let from = asked.length;
    fireEvent.click(screen.getByRole("button", { name: "Refresh schedules and workflows" }));
    await screen.findByText("note 3, edited");
    expect(screen.getAllByTestId("schedule-row")).toHaveLength(3);
    expect(readsOf(asked, "/api/v1/schedules", from)).toEqual(["/api/v1/schedules?pageSize=100", "/api/v1/schedules?pageSize=100&pageToken=2"]);

    const table = () => within(screen.getByRole("table", { name: "Budgets with what is used and reserved" }));
    await table().findByText("persona-2");
    expect(table().queryByText("persona-3")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Load more budgets" }));
    await table().findByText("persona-3");
    budgets[2] = { ...budgets[2], used: { tokens: 77, toolCalls: 0, costMicros: 0 } };
    from = asked.length;
    fireEvent.click(screen.getByRole("button", { name: "Refresh budgets and usage" }));
    await table().findByText("77 / 3000");
    expect(table().getByText("persona-1")).toBeTruthy();
    expect(readsOf(asked, "/api/v1/budgets", from)).toHaveLength(2);
  });

  it("a task's timeline: the next page after the click; cancelling re-reads the pages opened", async () => {
    const { api } = workGateway();
    render(<ApiProvider client={api}><WorkPage /></ApiProvider>);
    fireEvent.click(await screen.findByRole("button", { name: "Write the report" }));
    const timeline = await screen.findByTestId("timeline");
    await waitFor(() => expect(within(timeline).getAllByRole("listitem")).toHaveLength(2));
    fireEvent.click(screen.getByRole("button", { name: "Load more timeline entries" }));
    await waitFor(() => expect(within(timeline).getAllByRole("listitem")).toHaveLength(3));
    expect(within(timeline).getByText(/step 3/)).toBeTruthy();

    // Cancelling adds an entry on the second page: both pages are read again, and it shows.
    fireEvent.click(screen.getByRole("button", { name: "Cancel task" }));
    await waitFor(() => expect(within(timeline).getAllByRole("listitem")).toHaveLength(4));
    expect(within(timeline).getByText(/running → cancelled/)).toBeTruthy();
    expect(within(timeline).getByText(/step 1/)).toBeTruthy();
  });
});

describe("Load more on the Chat page", () => {
  it("conversations: the next page after the click; a finished turn re-reads the pages opened", async () => {
    const conversations: Row[] = [1, 2, 3].map((n) => ({
      id: `c${n}`, personaId: "p1", messageCount: n, createdAt: at, updatedAt: at,
    }));
    const sse = [
      'event: accepted\nid: 1\ndata: {"messageId":"m1"}\n\n',
      'event: completed\nid: 2\ndata: {"messageId":"m1","reply":{"messageId":"m2","text":"Hello.","traceId":null}}\n\n',
    ].join("");
    const { api, asked } = gateway(
      {
        "/api/v1/personas": { field: "personas", items: [{ id: "p1", name: "Ada", status: "active" }] },
        "/api/v1/personas/p1/conversations": { field: "conversations", items: conversations },
        "/api/v1/personas/p1/conversations/c1/messages": { field: "messages", items: [] },
      },
      (method, path) => {
        if (method !== "POST" || path !== "/api/v1/personas/p1/conversations/c1/messages") return undefined;
        conversations[2] = { ...conversations[2], messageCount: 33 };
        return new Response(sse, { status: 200, headers: { "Content-Type": "text/event-stream" } });
      },
    );
    render(
      <ApiProvider client={api}>
        <MemoryRouter initialEntries={["/chat/p1/c1"]}>
          <Routes>
            <Route path="/chat/:personaId?/:conversationId?" element={<ChatPage />} />
          </Routes>
        </MemoryRouter>
      </ApiProvider>,
    );
    const side = within(screen.getByRole("region", { name: "Conversations" }));
    await side.findByRole("link", { name: /c2/ });
    expect(side.queryByRole("link", { name: /c3/ })).toBeNull();
    fireEvent.click(side.getByRole("button", { name: "Load more conversations" }));
    await side.findByRole("link", { name: "c3 (3)" });

    const from = asked.length;
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "Hi" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    await side.findByRole("link", { name: "c3 (33)" });
    expect(side.getAllByRole("link")).toHaveLength(3);
    expect(readsOf(asked, "/api/v1/personas/p1/conversations", from)).toEqual([
      "/api/v1/personas/p1/conversations?pageSize=50", "/api/v1/personas/p1/conversations?pageSize=50&pageToken=2",
    ]);
  });
});
