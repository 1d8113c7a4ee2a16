import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import type { Delivery, Webhook } from "../admin/webhooks";
import { AdminWebhooksPage } from "./AdminWebhooks";

const at = "2025-01-01T12:00:00Z";
const SECRET = "whsec_c2VjcmV0IG9mIHRoZSB0ZXN0IHdlYmhvb2s=";
const answer = (status: number, body?: unknown) =>
  body === undefined
    ? new Response(null, { status })
    : new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** A tenant's webhooks behind a fake gateway: the secret is in the creation's answer only. */
function gateway() {
  const webhooks: Webhook[] = [];
  const deliveries: Delivery[] = [
    { id: "msg_1", eventId: "e1", eventType: "task.task_created", state: "dead", nextAttemptAt: null, createdAt: at,
      attempts: [{ number: 2, attemptedAt: at, statusCode: 0, error: "connection refused", latencyMs: 3 },
                 { number: 1, attemptedAt: at, statusCode: 502, error: "", latencyMs: 40 }] },
  ];
  const sent: { method: string; path: string; body: unknown }[] = [];
  const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
    const path = String(url);
    const method = init?.method ?? "GET";
    sent.push({ method, path, body: init?.body ? JSON.parse(init.body as string) : undefined });
    if (method === "POST" && path === "/api/v1/webhooks") {
      const body = JSON.parse(init!.body as string) as { url: string; eventTypes: string[]; description: string };
      const made: Webhook = { id: "w1", url: body.url, eventTypes: body.eventTypes, description: body.description, enabled: true,
        previousSecretExpiresAt: null, createdAt: at, updatedAt: at };
      webhooks.push(made);
      return answer(201, { webhook: made, secret: SECRET });
    }
    if (method === "GET" && path.startsWith("/api/v1/webhooks?")) return answer(200, { webhooks: [...webhooks], nextPageToken: "" });
    if (method === "GET" && path.startsWith("/api/v1/webhooks/w1/deliveries?")) {
      const state = new URL(path, "http://x").searchParams.get("state");
      return answer(200, { deliveries: deliveries.filter((d) => !state || d.state === state), nextPageToken: "" });
    }
    if (method === "DELETE" && path === "/api/v1/webhooks/w1") {
      webhooks.splice(0, 1);
      return answer(204);
    }
    return answer(404, { status: 404, detail: path });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  return { api: new ApiClient(store, "", fetcher as typeof fetch), sent };
}

describe("AdminWebhooksPage", () => {
  afterEach(cleanup);

  it("shows the signing secret once, then never again", async () => {
    const { api, sent } = gateway();
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("No webhooks yet: subscribe a URL below.");
    fireEvent.change(screen.getByLabelText("Receiver URL"), { target: { value: " https://hooks.example.com/edrs " } });
    fireEvent.change(screen.getByLabelText("Event types"), { target: { value: "task.*, knowledge.*, task.*" } });
    fireEvent.click(screen.getByRole("button", { name: "Create webhook" }));
    const shown = await screen.findByTestId("new-webhook-secret");
    expect((shown as HTMLInputElement).value).toBe(SECRET);
    expect(sent.find((s) => s.method === "POST")?.body).toEqual({
      url: "https://hooks.example.com/edrs", eventTypes: ["task.*", "knowledge.*"], description: "",
    });
    await screen.findByTestId("webhook-row");
    fireEvent.click(screen.getByRole("button", { name: "I stored it" }));
    expect(screen.queryByTestId("new-webhook-secret")).toBeNull();
    expect(document.body.innerHTML).not.toContain(SECRET);
  });

  it("refuses a bad event type before sending anything", async () => {
    const { api, sent } = gateway();
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("No webhooks yet: subscribe a URL below.");
    fireEvent.change(screen.getByLabelText("Receiver URL"), { target: { value: "https://hooks.example.com/edrs" } });
    fireEvent.change(screen.getByLabelText("Event types"), { target: { value: "Task Created" } });
    fireEvent.click(screen.getByRole("button", { name: "Create webhook" }));
    expect((await screen.findByRole("alert")).textContent).toBe("event type Task may hold only a-z, 0-9, _, ., * and >");
    expect(sent.filter((s) => s.method === "POST")).toEqual([]);
  });

  it("opens a delivery log with every attempt, filters it by state, and deletes the webhook", async () => {
    const { api, sent } = gateway();
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("No webhooks yet: subscribe a URL below.");
    fireEvent.change(screen.getByLabelText("Receiver URL"), { target: { value: "https://hooks.example.com/edrs" } });
    fireEvent.change(screen.getByLabelText("Event types"), { target: { value: "*" } });
    fireEvent.click(screen.getByRole("button", { name: "Create webhook" }));
    fireEvent.click(await screen.findByRole("button", { name: "Deliveries of https://hooks.example.com/edrs" }));
    const row = await screen.findByTestId("delivery-row");
    expect(within(row).getByTestId("delivery-state").textContent).toBe("dead");
    expect(within(row).getByTestId("delivery-answer").textContent).toBe("no answer: connection refused");
    expect(within(row).getAllByRole("listitem").map((li) => li.textContent?.replace(/^.*?: /, ""))).toEqual([
      "HTTP 502 (40 ms)", "no answer: connection refused (3 ms)",
    ]);
    fireEvent.change(screen.getByLabelText("State"), { target: { value: "succeeded" } });
    await screen.findByTestId("no-deliveries");
    expect(sent.some((s) => s.path.endsWith("state=succeeded"))).toBe(true);

    const confirm = window.confirm;
    window.confirm = () => true;
    try {
      fireEvent.click(screen.getByRole("button", { name: "Delete webhook https://hooks.example.com/edrs" }));
      await waitFor(() => expect(screen.queryByTestId("webhook-row")).toBeNull());
    } finally {
      window.confirm = confirm;
    }
    expect(screen.queryByTestId("delivery-row")).toBeNull();
  });
});
