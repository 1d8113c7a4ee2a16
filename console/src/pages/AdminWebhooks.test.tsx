import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import type { Delivery, Webhook } from "../admin/webhooks";
import { AdminWebhooksPage } from "./AdminWebhooks";

const at = "2025-01-01T12:00:00Z";
const SECRET = "whsec_c2VjcmV0IG9mIHRoZSB0ZXN0IHdlYmhvb2s=";
const ROTATED = "whsec_bmV3IHNlY3JldCBvZiB0aGUgdGVzdCB3ZWJob29r";
// Far ahead: the previous secret still verifies while the test runs.
const UNTIL = "2999-01-02T12:00:00Z";
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
    if (method === "POST" && path === "/api/v1/webhooks/w1/rotate-secret") {
      const body = JSON.parse(init!.body as string) as { previousSecretTtlSeconds: number };
      webhooks[0] = { ...webhooks[0], previousSecretExpiresAt: UNTIL, updatedAt: at };
      expect(body.previousSecretTtlSeconds).toBe(86_400);
      return answer(200, { webhook: webhooks[0], secret: ROTATED });
    }
    if (method === "PATCH" && path === "/api/v1/webhooks/w1") {
      const body = JSON.parse(init!.body as string) as Partial<Webhook>;
      if (body.url?.includes("internal")) {
        return answer(422, { status: 422, title: "Unprocessable", code: "validation_failed", detail: "the URL resolves to an internal address" });
      }
      webhooks[0] = { ...webhooks[0], ...body };
      return answer(200, webhooks[0]);
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

  it("rotates the signing secret: the new one shown once, with until when the old one verifies", async () => {
    const { api, sent } = gateway();
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("No webhooks yet: subscribe a URL below.");
    fireEvent.change(screen.getByLabelText("Receiver URL"), { target: { value: "https://hooks.example.com/edrs" } });
    fireEvent.change(screen.getByLabelText("Event types"), { target: { value: "*" } });
    fireEvent.click(screen.getByRole("button", { name: "Create webhook" }));
    await screen.findByTestId("webhook-row");
    fireEvent.click(screen.getByRole("button", { name: "I stored it" }));

    const confirm = window.confirm;
    const asked: string[] = [];
    window.confirm = (message?: string) => {
      asked.push(message ?? "");
      return asked.length > 1;
    };
    try {
      // Declined: nothing sent.
      fireEvent.click(screen.getByRole("button", { name: "Rotate secret of https://hooks.example.com/edrs" }));
      expect(sent.some((s) => s.path.endsWith("/rotate-secret"))).toBe(false);
      fireEvent.click(screen.getByRole("button", { name: "Rotate secret of https://hooks.example.com/edrs" }));
      const shown = await screen.findByTestId("new-webhook-secret");
      expect((shown as HTMLInputElement).value).toBe(ROTATED);
    } finally {
      window.confirm = confirm;
    }
    expect(asked[0]).toContain("keeps verifying for 24 hours");
    expect(screen.getByRole("heading", { name: /^New signing secret of https:\/\/hooks.example.com\/edrs: shown this once$/ })).toBeTruthy();
    const until = screen.getByTestId("previous-secret-until");
    expect(until.querySelector("time")?.getAttribute("datetime")).toBe(UNTIL);
    // The row says so too, once the list is read again.
    await waitFor(() => expect(within(screen.getByTestId("webhook-row")).getByTestId("previous-secret").textContent).toContain("previous secret verifies until"));
    fireEvent.click(screen.getByRole("button", { name: "I stored it" }));
    expect(screen.queryByTestId("new-webhook-secret")).toBeNull();
    expect(document.body.innerHTML).not.toContain(ROTATED);
    expect(document.body.innerHTML).not.toContain(SECRET);
  });

  it("edits a webhook: only the fields changed are sent, and a refusal is shown", async () => {
    const { api, sent } = gateway();
    render(<ApiProvider client={api}><AdminWebhooksPage /></ApiProvider>);
    await screen.findByText("No webhooks yet: subscribe a URL below.");
    fireEvent.change(screen.getByLabelText("Receiver URL"), { target: { value: "https://hooks.example.com/edrs" } });
    fireEvent.change(screen.getByLabelText("Event types"), { target: { value: "task.*" } });
    fireEvent.change(screen.getByLabelText("Description"), { target: { value: "ops" } });
    fireEvent.click(screen.getByRole("button", { name: "Create webhook" }));
    await screen.findByTestId("webhook-row");
    fireEvent.click(screen.getByRole("button", { name: "I stored it" }));
    // With its delivery log open beside the form.
    fireEvent.click(screen.getByRole("button", { name: "Deliveries of https://hooks.example.com/edrs" }));
    await screen.findByTestId("delivery-row");
    fireEvent.click(screen.getByRole("button", { name: "Edit webhook https://hooks.example.com/edrs" }));
    const form = screen.getByRole("form", { name: "Edit webhook https://hooks.example.com/edrs" });

    // Nothing changed: refused here, nothing sent.
    fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    expect(within(form).getByRole("alert").textContent).toBe("nothing changed: edit a field first");
    // A refusal by the API: its problem, the form kept.
    fireEvent.change(within(form).getByLabelText("Receiver URL"), { target: { value: "https://internal.example/x" } });
    fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    expect((await within(form).findByRole("alert")).textContent).toBe("the URL resolves to an internal address");

    fireEvent.change(within(form).getByLabelText("Receiver URL"), { target: { value: "https://hooks.example.com/edrs" } });
    fireEvent.change(within(form).getByLabelText("Event types"), { target: { value: "task.*, knowledge.*" } });
    fireEvent.change(within(form).getByLabelText("Description"), { target: { value: " ops dashboard " } });
    fireEvent.click(within(form).getByLabelText(/^Enabled/));
    fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(screen.queryByRole("form", { name: /^Edit webhook/ })).toBeNull());
    expect(sent.filter((s) => s.method === "PATCH").map((s) => s.body)).toEqual([
      { url: "https://internal.example/x" },
      { eventTypes: ["task.*", "knowledge.*"], description: "ops dashboard", enabled: false },
    ]);
    expect(screen.getByTestId("webhook-notice").textContent).toBe("Webhook to https://hooks.example.com/edrs updated.");
    const row = screen.getByTestId("webhook-row");
    await waitFor(() => expect(within(row).getByTestId("webhook-enabled").textContent).toBe("no"));
    expect(within(row).getByTestId("webhook-event-types").textContent).toBe("task.*, knowledge.*");
    expect(within(row).getByTestId("webhook-description").textContent).toBe("ops dashboard");
  });
});
