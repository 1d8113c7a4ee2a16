import { describe, expect, it } from "vitest";
import { MAX_UPLOAD_BYTES, percentSent, toStart, uploadStatus, uploadsReducer, type UploadItem } from "./uploads";

const add = (items: UploadItem[], ...files: [string, number][]) =>
  uploadsReducer(items, { type: "add", files: files.map(([key, size]) => ({ key, name: `${key}.md`, size })) });

describe("uploads", () => {
  it("starts files up to the concurrency, oldest first, and the next when one finishes", () => {
    let items = add([], ["a", 100], ["b", 100], ["c", 100]);
    expect(toStart(items, 2)).toEqual(["a", "b"]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "start", key: "b" });
    expect(toStart(items, 2)).toEqual([]);
    items = uploadsReducer(items, { type: "done", key: "a", outcome: "created", documentId: "d-a" });
    expect(toStart(items, 2)).toEqual(["c"]);
  });

  it("follows each file's progress on its own", () => {
    let items = add([], ["a", 200], ["b", 400]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "start", key: "b" });
    items = uploadsReducer(items, { type: "progress", key: "a", loaded: 50, total: 200 });
    items = uploadsReducer(items, { type: "progress", key: "b", loaded: 300, total: 400 });
    expect(items.map(percentSent)).toEqual([25, 75]);
    expect(uploadStatus(items[0])).toBe("uploading, 25%");
    // Every byte sent: waiting for the gateway's answer, still busy.
    items = uploadsReducer(items, { type: "progress", key: "b", loaded: 400, total: 400 });
    expect(items[1].state).toBe("processing");
    expect(toStart(add(items, ["c", 1]), 2)).toEqual([]);
    items = uploadsReducer(items, { type: "done", key: "b", outcome: "unchanged", documentId: "d-b" });
    expect(percentSent(items[1])).toBe(100);
    expect(uploadStatus(items[1])).toBe("uploaded: unchanged, nothing to do");
  });

  it("keeps a failure with its file and lets the others carry on", () => {
    let items = add([], ["a", 10], ["b", 10]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "failed", key: "a", error: "Unsupported media type; /file not a document" });
    expect(items[0]).toMatchObject({ state: "failed", error: "Unsupported media type; /file not a document" });
    expect(uploadStatus(items[0])).toBe("failed: Unsupported media type; /file not a document");
    expect(items[1].state).toBe("waiting");
    expect(toStart(items, 2)).toEqual(["b"]);
  });

  it("refuses a file over the gateway's limit without sending it", () => {
    const items = add([], ["big", MAX_UPLOAD_BYTES + 1], ["ok", 5]);
    expect(items[0].state).toBe("failed");
    expect(items[0].error).toContain("100 MB");
    expect(toStart(items, 2)).toEqual(["ok"]);
  });

  it("ignores progress for a file that is not uploading, and a key added twice", () => {
    let items = add([], ["a", 10]);
    items = uploadsReducer(items, { type: "progress", key: "a", loaded: 5, total: 10 });
    expect(items[0]).toMatchObject({ state: "waiting", loaded: 0 });
    items = add(items, ["a", 10]);
    expect(items).toHaveLength(1);
  });

  it("clears finished uploads and keeps those on their way", () => {
    let items = add([], ["a", 1], ["b", 1], ["c", 1]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "done", key: "a", outcome: "created", documentId: "d" });
    items = uploadsReducer(items, { type: "start", key: "b" });
    items = uploadsReducer(items, { type: "failed", key: "b", error: "x" });
    items = uploadsReducer(items, { type: "start", key: "c" });
    expect(uploadsReducer(items, { type: "clear" }).map((i) => i.key)).toEqual(["c"]);
  });
});
