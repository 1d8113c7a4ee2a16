// The state of the files a user drops on the knowledge page: each uploads on its own, with its
// own progress and its own failure (the API's problem detail), so one bad file never hides
// another's outcome.

/** The gateway's limit on a knowledge upload (EDRS_GATEWAY_KNOWLEDGE_MAX_UPLOAD_BYTES). */
export const MAX_UPLOAD_BYTES = 100 * 1024 * 1024;
/** Files sent at once; the rest wait their turn. */
export const UPLOAD_CONCURRENCY = 2;

export type UploadState = "waiting" | "uploading" | "processing" | "uploaded" | "failed" | "cancelled";

export interface UploadItem {
  key: string;
  name: string;
  size: number;
  /** Bytes sent so far. */
  loaded: number;
  state: UploadState;
  /** Why it failed: the problem's detail, or the reason it was not sent. */
  error: string | null;
  /** created, updated or unchanged, once the gateway answered. */
  outcome: string | null;
  documentId: string | null;
}

export type UploadAction =
  | { type: "add"; files: { key: string; name: string; size: number }[] }
  | { type: "start"; key: string }
  | { type: "progress"; key: string; loaded: number; total: number }
  | { type: "done"; key: string; outcome: string; documentId: string }
  | { type: "failed"; key: string; error: string }
  | { type: "cancel"; key: string }
  | { type: "clear" };

function update(items: UploadItem[], key: string, change: (item: UploadItem) => UploadItem): UploadItem[] {
  return items.map((item) => (item.key === key ? change(item) : item));
}

export function uploadsReducer(items: UploadItem[], action: UploadAction): UploadItem[] {
  switch (action.type) {
    case "add": {
      const known = new Set(items.map((i) => i.key));
      const added = action.files
        .filter((f) => !known.has(f.key))
        .map((f): UploadItem => {
          const tooLarge = f.size > MAX_UPLOAD_BYTES;
          return {
            key: f.key,
            name: f.name,
            size: f.size,
            loaded: 0,
            state: tooLarge ? "failed" : "waiting",
            error: tooLarge ? `over the 100 MB upload limit (${f.size} bytes): not sent` : null,
            outcome: null,
            documentId: null,
          };
        });
      return [...items, ...added];
    }
    case "start":
      return update(items, action.key, (i) => (i.state === "waiting" ? { ...i, state: "uploading", loaded: 0 } : i));
    case "progress":
      return update(items, action.key, (i) =>
        i.state === "uploading"
          ? {
              ...i,
              loaded: Math.min(action.loaded, action.total),
              // Every byte sent: the gateway is passing it on and will answer.
              state: action.total > 0 && action.loaded >= action.total ? "processing" : "uploading",
            }
          : i,
      );
    case "done":
      return update(items, action.key, (i) => ({
        ...i,
        state: "uploaded",
        loaded: i.size,
        outcome: action.outcome,
        documentId: action.documentId,
        error: null,
      }));
    case "failed":
      // A cancelled upload rejects as it is aborted: it stays cancelled, not failed.
      return update(items, action.key, (i) => (i.state === "cancelled" ? i : { ...i, state: "failed", error: action.error }));
    case "cancel":
      return update(items, action.key, (i) => (cancellable(i) ? { ...i, state: "cancelled", error: null } : i));
    case "clear":
      // Finished ones go; those still on their way stay.
      return items.filter((i) => !FINISHED.has(i.state));
  }
}

const FINISHED = new Set<UploadState>(["uploaded", "failed", "cancelled"]);

/** Whether the user may still cancel a file: while it waits its turn or its bytes are on their
 * way. Once every byte is sent the gateway is storing it, and cancelling would not undo that. */
export function cancellable(item: UploadItem): boolean {
  return item.state === "waiting" || item.state === "uploading";
}

/** Whether a file's upload is over, one way or another. */
export function finished(item: UploadItem): boolean {
  return FINISHED.has(item.state);
}

/** The files to start now: waiting ones, oldest first, up to the concurrency left. */
export function toStart(items: UploadItem[], concurrency = UPLOAD_CONCURRENCY): string[] {
  const busy = items.filter((i) => i.state === "uploading" || i.state === "processing").length;
  const free = Math.max(0, concurrency - busy);
  return items.filter((i) => i.state === "waiting").slice(0, free).map((i) => i.key);
}

/** Percent of the file sent, 0–100 (an empty file is complete once answered). */
export function percentSent(item: UploadItem): number {
  if (item.state === "uploaded") return 100;
  if (item.size === 0) return 0;
  return Math.round((100 * item.loaded) / item.size);
}

/** What a row says about its file. */
export function uploadStatus(item: UploadItem): string {
  switch (item.state) {
    case "waiting":
      return "waiting";
    case "uploading":
      return `uploading, ${percentSent(item)}%`;
    case "processing":
      return "sent, waiting for the gateway";
    case "uploaded":
      return item.outcome === "unchanged" ? "uploaded: unchanged, nothing to do" : `uploaded: ${item.outcome ?? "stored"}`;
    case "failed":
      return `failed: ${item.error ?? "unknown error"}`;
    case "cancelled":
      return "cancelled";
  }
}
