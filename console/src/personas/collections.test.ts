import { describe, expect, it } from "vitest";
import type { Collection } from "../knowledge/types";
import { attach, attachable, attachedOf, detach, labelOf } from "./collections";

const collection = (id: string, name: string): Collection => ({
  id, name, description: "", documentCount: 0, chunkCount: 0, createdAt: "2025-01-01T12:00:00Z",
});
const tenant = [collection("c2", "policies"), collection("c1", "handbook"), collection("c3", "archive")];

describe("a persona's collections", () => {
  it("attaches at the end, once, and at most twenty", () => {
    expect(attach(["c1"], "c2")).toEqual({ ok: true, ids: ["c1", "c2"] });
    expect(attach(["c1"], "c1")).toEqual({ ok: false, error: "that collection is attached already" });
    expect(attach([], "")).toEqual({ ok: false, error: "choose a collection to attach" });
    const full = Array.from({ length: 20 }, (_, i) => `k${i}`);
    expect(attach(full, "c1")).toMatchObject({ ok: false, error: expect.stringContaining("at most 20") });
  });

  it("detaches one and keeps the others in their order", () => {
    expect(detach(["c1", "c2", "c3"], "c2")).toEqual(["c1", "c3"]);
    expect(detach(["c1"], "c9")).toEqual(["c1"]);
  });

  it("names the attached ones in the persona's order, an unknown one by its id", () => {
    const attached = attachedOf(["c3", "gone", "c1"], tenant);
    expect(attached).toEqual([{ id: "c3", name: "archive" }, { id: "gone", name: null }, { id: "c1", name: "handbook" }]);
    expect(attached.map(labelOf)).toEqual(["archive", "unknown collection gone", "handbook"]);
  });

  it("offers the collections not attached yet, by name", () => {
    expect(attachable(["c1"], tenant).map((c) => c.name)).toEqual(["archive", "policies"]);
    expect(attachable(["c1", "c2", "c3"], tenant)).toEqual([]);
  });
});
