import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import axe from "axe-core";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import { EntityGraph } from "./EntityGraph";

const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
const at = "2025-01-01T12:00:00Z";
const entity = (id: string, name: string) => ({ id, name, type: "organization", aliases: [], collectionIds: ["k1"], mentionCount: 2, createdAt: at });
const citation = { page: 2, headingPath: ["News"], startOffset: 0, endOffset: 39, contentHash: "h", documentVersion: 1, chunkIndex: 0 };

describe("EntityGraph", () => {
  afterEach(cleanup);

  it("finds an entity and draws and lists its neighbourhood, from the graph routes", async () => {
    const asked: string[] = [];
    const fetcher = async (url: RequestInfo | URL) => {
      asked.push(String(url));
      if (String(url).includes("/neighbourhood")) {
        return json({
          entity: entity("e1", "Acme Corp"),
          relations: [
            {
              id: "r1", subjectId: "e1", predicate: "acquired", objectId: "e2", validFrom: "2024-06-01T00:00:00Z", validTo: null,
              supersededBy: null, supersedeReason: null, createdAt: at,
              sources: [{ documentId: "d1", chunkId: "c1", title: "Press release", text: "Acme Corp acquired Globex in June 2024.", citation }],
            },
          ],
          neighbours: [entity("e2", "Globex")],
          nextPageToken: "",
        });
      }
      return json({ entities: [entity("e1", "Acme Corp")], nextPageToken: "" });
    };
    const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
    const api = new ApiClient(store, "", fetcher as typeof fetch);
    const { container } = render(
      <ApiProvider client={api}>
        <main>
          <EntityGraph collections={[{ id: "k1", name: "news", description: "", documentCount: 1, chunkCount: 1, createdAt: at }]} />
        </main>
      </ApiProvider>,
    );
    fireEvent.change(screen.getByLabelText("Entity name"), { target: { value: "acme" } });
    fireEvent.click(screen.getByRole("button", { name: "Find entities" }));
    fireEvent.click(await screen.findByRole("button", { name: "Acme Corp" }));
    await screen.findByTestId("neighbourhood");
    expect(asked.some((u) => u.includes("/api/v1/knowledge/graph/entities?pageSize=50&query=acme"))).toBe(true);
    expect(asked.some((u) => u.includes("/api/v1/knowledge/graph/entities/e1/neighbourhood"))).toBe(true);

    const svg = screen.getByRole("img", { name: /Acme Corp and 1 related entities/ });
    expect(svg.querySelectorAll("circle")).toHaveLength(2);
    expect(svg.querySelectorAll("line")).toHaveLength(1);
    expect(svg.textContent).toContain("acquired");
    expect(screen.getByText("Acme Corp acquired Globex")).toBeTruthy();
    expect(screen.getByText("Press release, page 2, News", { exact: false })).toBeTruthy();
    // No style attribute anywhere: the page runs under `style-src 'self'`.
    expect(container.querySelector("[style]")).toBeNull();

    // Superseded relations are asked for when wanted.
    fireEvent.click(screen.getByRole("checkbox", { name: "Include superseded relations" }));
    await waitFor(() => expect(asked.some((u) => u.includes("includeSuperseded=true"))).toBe(true));
    await screen.findByTestId("neighbourhood");

    const results = await axe.run(container, { rules: { "color-contrast": { enabled: false } } });
    const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    expect(serious.map((v) => v.id)).toEqual([]);
  });
});
