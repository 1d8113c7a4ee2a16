import { describe, expect, it } from "vitest";
import { MAX_UPLOAD_BYTES, cancellable, finished, percentSent, toStart, uploadStatus, uploadsReducer, type UploadItem } from "./uploads";

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

  it("cancels a file on its way or waiting; the next waiting one takes its place", () => {
    let items = add([], ["a", 100], ["b", 100], ["c", 100], ["d", 100]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "start", key: "b" });
    items = uploadsReducer(items, { type: "progress", key: "a", loaded: 40, total: 100 });
    expect(items.map(cancellable)).toEqual([true, true, true, true]);
    items = uploadsReducer(items, { type: "cancel", key: "a" });
    expect(items[0]).toMatchObject({ state: "cancelled", error: null });
    expect(uploadStatus(items[0])).toBe("cancelled");
    expect(finished(items[0])).toBe(true);
    // Its aborted request rejects afterwards: it stays cancelled, not failed.
    items = uploadsReducer(items, { type: "failed", key: "a", error: "the upload was cancelled" });
    expect(items[0].state).toBe("cancelled");
    // A waiting file cancelled is never started.
    items = uploadsReducer(items, { type: "cancel", key: "c" });
    expect(toStart(items, 2)).toEqual(["d"]);
    items = uploadsReducer(items, { type: "start", key: "d" });
    expect(items.map((i) => i.state)).toEqual(["cancelled", "uploading", "cancelled", "uploading"]);
    expect(uploadsReducer(items, { type: "clear" }).map((i) => i.key)).toEqual(["b", "d"]);
  });

  it("offers no cancel once every byte is sent, nor for a finished file", () => {
    let items = add([], ["a", 10], ["b", 10], ["c", 10]);
    items = uploadsReducer(items, { type: "start", key: "a" });
    items = uploadsReducer(items, { type: "progress", key: "a", loaded: 10, total: 10 });
    expect(items[0].state).toBe("processing");
    items = uploadsReducer(items, { type: "start", key: "b" });
    items = uploadsReducer(items, { type: "done", key: "b", outcome: "created", documentId: "d" });
    items = uploadsReducer(items, { type: "start", key: "c" });
    items = uploadsReducer(items, { type: "failed", key: "c", error: "x" });
    expect(items.map(cancellable)).toEqual([false, false, false]);
    const kept = uploadsReducer(items, { type: "cancel", key: "a" });
    expect(kept.map((i) => i.state)).toEqual(["processing", "uploaded", "failed"]);
  });
});
