import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("parses events with names, ids and multi-line data", () => {
    const parser = new SseParser();
    const events = parser.feed('id: 1-0\nevent: delta\ndata: {"text":"a"}\n\n: ping\n\ndata: one\ndata: two\n\n');
    expect(events).toEqual([
      { event: "delta", data: '{"text":"a"}', id: "1-0" },
      { event: "message", data: "one\ntwo", id: "1-0" },
    ]);
  });

  it("joins events split anywhere across chunks, \\r\\n included", () => {
    const text = 'id: 5-1\r\nevent: started\r\ndata: {}\r\n\r\nevent: delta\r\ndata: {"text":"hé"}\r\n\r\n';
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new SseParser();
      const events = [...parser.feed(text.slice(0, cut)), ...parser.feed(text.slice(cut))];
      expect(events.map((e) => e.event), `cut at ${cut}`).toEqual(["started", "delta"]);
      expect(events[1].data).toBe('{"text":"hé"}');
    }
  });

  it("emits nothing for an event without data", () => {
    expect(new SseParser().feed("event: ping\n\n")).toEqual([]);
  });
});
