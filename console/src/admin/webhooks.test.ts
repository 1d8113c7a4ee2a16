import { describe, expect, it } from "vitest";
import {
  answerOf,
  deliveriesLive,
  draftOf,
  lastAttempt,
  parseEventTypes,
  previousSecretLive,
  webhookChanges,
  type Attempt,
  type Delivery,
  type Webhook,
} from "./webhooks";

const at = "2025-01-01T12:00:00Z";
const attempt = (number: number, statusCode: number, error = ""): Attempt => ({ number, attemptedAt: at, statusCode, error, latencyMs: 12 });
const delivery = (state: Delivery["state"], attempts: Attempt[]): Delivery => ({
  id: "msg_0123", eventId: "e1", eventType: "task.task_created", state, attempts, nextAttemptAt: null, createdAt: at,
});

describe("parseEventTypes", () => {
  it("splits on commas, spaces and new lines and keeps each type once", () => {
    expect(parseEventTypes(" task.task_created, task.*\nknowledge.*  task.* ")).toEqual({
      ok: true,
      types: ["task.task_created", "task.*", "knowledge.*"],
    });
    expect(parseEventTypes("*")).toEqual({ ok: true, types: ["*"] });
  });

  it("refuses nothing given, a type the API would refuse, and too many", () => {
    expect(parseEventTypes(" ,, ")).toMatchObject({ ok: false, error: expect.stringContaining("at least one") });
    expect(parseEventTypes("task.*, Task Created")).toEqual({ ok: false, error: "event type Task may hold only a-z, 0-9, _, ., * and >" });
    expect(parseEventTypes("a".repeat(201))).toMatchObject({ ok: false, error: expect.stringContaining("longer than 200") });
    const many = Array.from({ length: 51 }, (_, i) => `t${i}.*`).join(",");
    expect(parseEventTypes(many)).toEqual({ ok: false, error: "at most 50 event types, not 51" });
  });
});

describe("deliveries", () => {
  it("finds the last attempt by its number, whatever the order", () => {
    expect(lastAttempt(delivery("pending", []))).toBeNull();
    expect(lastAttempt(delivery("dead", [attempt(2, 500), attempt(3, 0, "timed out"), attempt(1, 503)]))?.number).toBe(3);
  });

  it("says what the receiver answered, or why nothing came", () => {
    expect(answerOf(attempt(1, 204))).toBe("HTTP 204");
    expect(answerOf(attempt(1, 500, "server error"))).toBe("HTTP 500: server error");
    expect(answerOf(attempt(1, 0, "connection refused"))).toBe("no answer: connection refused");
    expect(answerOf(attempt(1, 0))).toBe("no answer");
  });

  it("is live while a delivery waits for an attempt", () => {
    expect(deliveriesLive([delivery("succeeded", [attempt(1, 200)]), delivery("dead", [])])).toBe(false);
    expect(deliveriesLive([delivery("succeeded", []), delivery("pending", [])])).toBe(true);
  });
});

const webhook: Webhook = {
  id: "w1", url: "https://hooks.example.com/edrs", eventTypes: ["task.*", "knowledge.*"], description: "ops", enabled: true,
  previousSecretExpiresAt: null, createdAt: at, updatedAt: at,
};

describe("webhook edits", () => {
  it("sends only what changed, trimmed and checked", () => {
    const draft = draftOf(webhook);
    expect(draft).toEqual({ url: webhook.url, eventTypes: "task.*, knowledge.*", description: "ops", enabled: true });
    expect(webhookChanges(webhook, { ...draft, description: " ops dashboard " })).toEqual({ ok: true, changes: { description: "ops dashboard" } });
    expect(webhookChanges(webhook, { ...draft, url: " https://hooks.example.com/v2 ", enabled: false })).toEqual({
      ok: true, changes: { url: "https://hooks.example.com/v2", enabled: false },
    });
    expect(webhookChanges(webhook, { ...draft, eventTypes: "task.*" })).toEqual({ ok: true, changes: { eventTypes: ["task.*"] } });
    expect(webhookChanges(webhook, { ...draft, description: "" })).toEqual({ ok: true, changes: { description: "" } });
  });

  it("counts the same event types in another order, or repeated, as no change", () => {
    expect(webhookChanges(webhook, { ...draftOf(webhook), eventTypes: "knowledge.* task.* task.*" })).toEqual({
      ok: false, error: "nothing changed: edit a field first",
    });
  });

  it("refuses what the API would refuse, before sending", () => {
    const draft = draftOf(webhook);
    expect(webhookChanges(webhook, { ...draft, url: "  " })).toEqual({ ok: false, error: "give the receiver's URL" });
    expect(webhookChanges(webhook, { ...draft, url: `https://x.example/${"a".repeat(2000)}` })).toMatchObject({ ok: false });
    expect(webhookChanges(webhook, { ...draft, eventTypes: "Task" })).toEqual({ ok: false, error: "event type Task may hold only a-z, 0-9, _, ., * and >" });
    expect(webhookChanges(webhook, { ...draft, eventTypes: " , " })).toMatchObject({ ok: false, error: expect.stringContaining("at least one") });
    expect(webhookChanges(webhook, { ...draft, description: "d".repeat(501) })).toEqual({
      ok: false, error: "the description is longer than 500 characters",
    });
    expect(webhookChanges(webhook, { ...draft, description: "two\nlines" })).toEqual({
      ok: false, error: "the description is one line, with no control characters",
    });
  });

  it("knows while a rotated-out secret still verifies", () => {
    const now = Date.parse("2025-01-02T00:00:00Z");
    expect(previousSecretLive(webhook, now)).toBe(false);
    expect(previousSecretLive({ ...webhook, previousSecretExpiresAt: "2025-01-02T12:00:00Z" }, now)).toBe(true);
    expect(previousSecretLive({ ...webhook, previousSecretExpiresAt: "2025-01-01T12:00:00Z" }, now)).toBe(false);
  });
});
