import { describe, expect, it } from "vitest";
import type { SseEvent } from "../api/sse";
import { afterId, applyEvent, initialTurn, type TurnState } from "./turn";

const ev = (event: string, data: unknown, id: string): SseEvent => ({ event, data: JSON.stringify(data), id });

const stream: SseEvent[] = [
  ev("accepted", { messageId: "m1" }, "100-0"),
  ev("queued", { ahead: 1 }, "100-1"),
  ev("started", {}, "101-0"),
  ev("delta", { text: "Hello" }, "101-1"),
  ev("delta", { text: ", world" }, "102-0"),
  ev("completed", { messageId: "m1", reply: { messageId: "r1", text: "Hello, world", traceId: "t" }, learned: [] }, "103-0"),
];

const run = (events: SseEvent[], from: TurnState = initialTurn) => events.reduce(applyEvent, from);

describe("a turn built from its events", () => {
  it("goes accepted, queued, typing, completed with the text as it streams", () => {
    expect(run(stream.slice(0, 1)).phase).toBe("accepted");
    expect(run(stream.slice(0, 2))).toMatchObject({ phase: "queued", ahead: 1 });
    expect(run(stream.slice(0, 4))).toMatchObject({ phase: "typing", text: "Hello" });
    const done = run(stream);
    expect(done).toMatchObject({ phase: "completed", text: "Hello, world", messageId: "m1", lastEventId: "103-0" });
  });

  it("a resumed stream that overlaps the broken one repeats no text", () => {
    const broken = run(stream.slice(0, 4));
    // The resumed stream starts earlier than needed (from the start, as after a reload).
    const resumed = run(stream, broken);
    expect(resumed.text).toBe("Hello, world");
    expect(run(stream.slice(3), broken).text).toBe("Hello, world");
  });

  it("shows tool calls as they happen, with their results", () => {
    const called = run([
      stream[0],
      ev("tool_call", { callId: "c1", tool: "knowledge_search", arguments: { query: "sea" }, impact: "read", status: "running", reason: "" }, "100-5"),
    ]);
    expect(called.toolCalls).toMatchObject([{ callId: "c1", tool: "knowledge_search", status: "running" }]);
    expect(called.toolCalls[0].result).toBeUndefined();
    const done = applyEvent(called, ev("tool_result", { callId: "c1", tool: "knowledge_search", content: "3 passages", isError: false, durationMs: 12 }, "100-6"));
    expect(done.toolCalls[0].result).toEqual({ content: "3 passages", isError: false, durationMs: 12 });
  });

  it("ends failed with the problem of an error event", () => {
    const failed = run([stream[0], ev("error", { status: 504, code: "upstream_timeout", detail: "too slow" }, "200-0")]);
    expect(failed.phase).toBe("failed");
    expect(failed.problem?.code).toBe("upstream_timeout");
  });

  it("orders Redis stream ids numerically", () => {
    expect(afterId("10-0", "9-5")).toBe(true);
    expect(afterId("9-10", "9-9")).toBe(true);
    expect(afterId("9-9", "9-9")).toBe(false);
    expect(afterId("1-0", null)).toBe(true);
  });
});
