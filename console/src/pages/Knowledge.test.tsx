import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import { KnowledgePage } from "./Knowledge";

const at = "2025-01-01T12:00:00Z";
const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
const collection = { id: "k1", name: "handbook", description: "", documentCount: 0, chunkCount: 0, createdAt: at };
const doc = (id: string) => ({
  id, collectionId: "k1", externalId: `${id}.md`, title: id, source: "", metadata: {}, state: "indexed", failure: null, version: 1,
  format: "markdown", sizeBytes: 10, pageCount: 0, chunkCount: 1, textLength: 10, contentHash: "h", createdAt: at, updatedAt: at,
});

/** An upload held open until the test answers it or the page aborts it, as a slow network would. */
class HeldXhr {
  static all: HeldXhr[] = [];
  status = 0;
  statusText = "";
  responseText = "";
  aborted = false;
  name = "";
  upload: { onprogress: ((e: ProgressEvent) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  open() {}
  setRequestHeader() {}
  size = 0;
  send(form: FormData) {
    const file = form.get("file") as File;
    this.name = file.name;
    this.size = file.size;
    HeldXhr.all.push(this);
    // Half of it sent, then held.
    this.upload.onprogress?.({ lengthComputable: true, loaded: file.size / 2, total: file.size } as ProgressEvent);
  }
  abort() {
    this.aborted = true;
    this.onabort?.();
  }
  answer() {
    this.upload.onprogress?.({ lengthComputable: true, loaded: this.size, total: this.size } as ProgressEvent);
    this.status = 201;
    this.responseText = JSON.stringify({ outcome: "created", document: doc(this.name.replace(/\.md$/, "")) });
    this.onload?.();
  }
}

function page() {
  HeldXhr.all = [];
  const fetcher = async (url: RequestInfo | URL) => {
    const path = String(url);
    if (path.startsWith("/api/v1/knowledge/collections?")) return json({ collections: [collection], nextPageToken: "" });
    if (path.startsWith("/api/v1/knowledge/documents?")) return json({ documents: [], nextPageToken: "" });
    return new Response(JSON.stringify({ status: 404, detail: path }), { status: 404 });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  const api = new ApiClient(store, "", fetcher as typeof fetch, () => Date.now(), () => new HeldXhr() as unknown as XMLHttpRequest);
  render(
    <ApiProvider client={api}>
      <MemoryRouter initialEntries={["/knowledge/handbook"]}>
        <Routes>
          <Route path="/knowledge/:collection?" element={<KnowledgePage />} />
        </Routes>
      </MemoryRouter>
    </ApiProvider>,
  );
}

const row = (name: string) => screen.getAllByTestId("upload").find((li) => li.textContent?.startsWith(name))!;
const file = (name: string) => new File([`# ${name}`], name, { type: "text/markdown" });

describe("Knowledge uploads", () => {
  afterEach(cleanup);

  it("cancels a file mid-upload: its request is aborted, it shows cancelled, and the batch goes on", async () => {
    page();
    const input = await screen.findByLabelText(/^Files to upload/);
    fireEvent.change(input, { target: { files: [file("a.md"), file("b.md"), file("c.md")] } });
    // Two at a time: a and b are on their way, c waits.
    await waitFor(() => expect(HeldXhr.all.map((x) => x.name)).toEqual(["a.md", "b.md"]));
    expect(within(row("a.md")).getByTestId("upload-status").textContent).toBe("uploading, 50%");
    expect(within(row("c.md")).getByTestId("upload-status").textContent).toBe("waiting");

    fireEvent.click(screen.getByRole("button", { name: "Cancel a.md" }));
    expect(HeldXhr.all[0].aborted).toBe(true);
    await waitFor(() => expect(within(row("a.md")).getByTestId("upload-status").textContent).toBe("cancelled"));
    expect(row("a.md").getAttribute("data-state")).toBe("cancelled");
    expect(within(row("a.md")).queryByRole("button", { name: "Cancel a.md" })).toBeNull();
    // Its place goes to c.
    await waitFor(() => expect(HeldXhr.all.map((x) => x.name)).toEqual(["a.md", "b.md", "c.md"]));

    HeldXhr.all[1].answer();
    HeldXhr.all[2].answer();
    await waitFor(() =>
      expect(screen.getByTestId("upload-summary").textContent).toBe("2 uploaded, 0 failed, 1 cancelled, 0 on their way."),
    );
    expect(within(row("b.md")).getByTestId("upload-status").textContent).toBe("uploaded: created");
    expect(HeldXhr.all.filter((x) => x.aborted)).toHaveLength(1);
  });

  it("cancels a waiting file before it is sent", async () => {
    page();
    const input = await screen.findByLabelText(/^Files to upload/);
    fireEvent.change(input, { target: { files: [file("a.md"), file("b.md"), file("c.md")] } });
    await waitFor(() => expect(HeldXhr.all).toHaveLength(2));
    fireEvent.click(screen.getByRole("button", { name: "Cancel c.md" }));
    expect(row("c.md").getAttribute("data-state")).toBe("cancelled");
    HeldXhr.all[0].answer();
    HeldXhr.all[1].answer();
    await waitFor(() =>
      expect(screen.getByTestId("upload-summary").textContent).toBe("2 uploaded, 0 failed, 1 cancelled, 0 on their way."),
    );
    // c was never sent.
    expect(HeldXhr.all.map((x) => x.name)).toEqual(["a.md", "b.md"]);
  });
});
