import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "./client";
import { ApiProvider } from "./context";
import { usePaged } from "./hooks";
import { mergePage, readPages, withPageToken } from "./paging";
import { LoadMore } from "../components/LoadMore";

type Item = { id: string; v?: number };
const key = (i: Item) => i.id;

describe("paging", () => {
  it("adds the page token to a path with or without a query", () => {
    expect(withPageToken("/api/v1/runs?pageSize=20", "")).toBe("/api/v1/runs?pageSize=20");
    expect(withPageToken("/api/v1/runs?pageSize=20", "a b/c")).toBe("/api/v1/runs?pageSize=20&pageToken=a%20b%2Fc");
    expect(withPageToken("/api/v1/runs", "t")).toBe("/api/v1/runs?pageToken=t");
  });

  it("appends a page, keeping an item that came again once, at its place, in its newer copy", () => {
    const merged = mergePage<Item>([{ id: "a" }, { id: "b", v: 1 }], [{ id: "b", v: 2 }, { id: "c" }, { id: "c" }], key);
    expect(merged).toEqual([{ id: "a" }, { id: "b", v: 2 }, { id: "c" }]);
  });

  it("reads pages from the first up to the count, and stops at the last page", async () => {
    const pages: Record<string, { items: Item[]; nextPageToken: string }> = {
      "/l?pageSize=2": { items: [{ id: "1" }, { id: "2" }], nextPageToken: "p2" },
      "/l?pageSize=2&pageToken=p2": { items: [{ id: "3" }, { id: "4" }], nextPageToken: "p3" },
      "/l?pageSize=2&pageToken=p3": { items: [{ id: "5" }], nextPageToken: "" },
    };
    const asked: string[] = [];
    const fetchPage = async (path: string) => {
      asked.push(path);
      return pages[path];
    };
    expect(await readPages(fetchPage, "/l?pageSize=2", 2, key)).toEqual({
      items: [{ id: "1" }, { id: "2" }, { id: "3" }, { id: "4" }], nextPageToken: "p3", pages: 2,
    });
    asked.length = 0;
    const all = await readPages(fetchPage, "/l?pageSize=2", 9, key);
    expect(all.items.map(key)).toEqual(["1", "2", "3", "4", "5"]);
    expect(all).toMatchObject({ nextPageToken: "", pages: 3 });
    expect(asked).toHaveLength(3);
    // A count under one still reads the first page.
    expect((await readPages(fetchPage, "/l?pageSize=2", 0, key)).pages).toBe(1);
  });
});

/** Tasks behind a fake gateway, two a page; `items` can change between reads. */
function gateway(items: Item[]) {
  const asked: string[] = [];
  const fetcher = async (url: RequestInfo | URL) => {
    const u = new URL(String(url), "http://x");
    asked.push(`${u.pathname}${u.search}`);
    const status = u.searchParams.get("status");
    const list = items.filter((i) => !status || i.id.startsWith(status));
    const start = Number(u.searchParams.get("pageToken") || "0");
    const body = { tasks: list.slice(start, start + 2), nextPageToken: start + 2 < list.length ? String(start + 2) : "" };
    return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  return { api: new ApiClient(store, "", fetcher as typeof fetch), asked };
}

function Tasks({ status }: { status: string }) {
  const tasks = usePaged<Item>(`/api/v1/tasks?pageSize=2${status ? `&status=${status}` : ""}`, "tasks");
  return (
    <div>
      <ul>{tasks.items.map((t) => <li key={t.id}>{t.id}</li>)}</ul>
      <LoadMore list={tasks} what="tasks" />
      <button type="button" onClick={tasks.reload}>Refresh</button>
      {tasks.loaded && <p>read</p>}
    </div>
  );
}

const shown = () => screen.queryAllByRole("listitem").map((li) => li.textContent);

describe("usePaged and Load more", () => {
  afterEach(cleanup);

  it("reads the next page on Load more until the last, and a refresh reads every page opened", async () => {
    const items: Item[] = ["a1", "a2", "b1", "b2", "a3"].map((id) => ({ id }));
    const { api, asked } = gateway(items);
    const { rerender } = render(<ApiProvider client={api}><Tasks status="" /></ApiProvider>);
    await waitFor(() => expect(shown()).toEqual(["a1", "a2"]));
    fireEvent.click(screen.getByRole("button", { name: "Load more tasks" }));
    await waitFor(() => expect(shown()).toEqual(["a1", "a2", "b1", "b2"]));
    expect(asked).toContain("/api/v1/tasks?pageSize=2&pageToken=2");

    // A refresh re-reads both pages opened, from the first: a new task comes in, none is lost.
    items.unshift({ id: "a0" });
    asked.length = 0;
    fireEvent.click(screen.getByRole("button", { name: "Refresh" }));
    await waitFor(() => expect(shown()).toEqual(["a0", "a1", "a2", "b1"]));
    expect(asked).toEqual(["/api/v1/tasks?pageSize=2", "/api/v1/tasks?pageSize=2&pageToken=2"]);

    fireEvent.click(screen.getByRole("button", { name: "Load more tasks" }));
    await waitFor(() => expect(shown()).toEqual(["a0", "a1", "a2", "b1", "b2", "a3"]));
    // The last page read: no more to load.
    expect(screen.queryByRole("button", { name: /Load more/ })).toBeNull();

    // Another filter starts again from its first page.
    rerender(<ApiProvider client={api}><Tasks status="a" /></ApiProvider>);
    await waitFor(() => expect(shown()).toEqual(["a0", "a1"]));
    expect(screen.getByRole("button", { name: "Load more tasks" })).toBeTruthy();
  });

  it("shows no Load more for a list of one page", async () => {
    const { api } = gateway([{ id: "only" }]);
    render(<ApiProvider client={api}><Tasks status="" /></ApiProvider>);
    await screen.findByText("read");
    expect(shown()).toEqual(["only"]);
    expect(screen.queryByTestId("load-more")).toBeNull();
  });
});
