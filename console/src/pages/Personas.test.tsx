import { useState } from "react";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import type { Persona } from "../api/types";
import type { Collection } from "../knowledge/types";
import { KnowledgeCollections } from "./Personas";

const at = "2025-01-01T12:00:00Z";
const collection = (id: string, name: string): Collection => ({ id, name, description: "", documentCount: 1, chunkCount: 2, createdAt: at });
const collections = [collection("c1", "handbook"), collection("c2", "policies")];
const ada: Persona = {
  id: "p1", name: "Ada", role: "analyst", responsibilities: [], skills: [], tone: "", instructions: "",
  knowledgeCollections: ["c1"], status: "active", createdAt: at, updatedAt: at,
};
const answer = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

function gateway(refuse: boolean) {
  const patches: unknown[] = [];
  const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
    if (String(url) === "/api/v1/personas/p1" && init?.method === "PATCH") {
      const body = JSON.parse(init.body as string) as { knowledgeCollections: string[] };
      patches.push(body);
      if (refuse) return answer(422, { status: 422, code: "validation_failed", detail: "knowledgeCollections: collection c2 does not exist" });
      return answer(200, { ...ada, knowledgeCollections: body.knowledgeCollections });
    }
    return answer(404, { status: 404, detail: String(url) });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  return { api: new ApiClient(store, "", fetcher as typeof fetch), patches };
}

/** The component as the Personas page holds it: the persona it shows is the one the API answered. */
function Holder({ api, initial }: { api: ApiClient; initial: Persona }) {
  return <ApiProvider client={api}><Stateful initial={initial} /></ApiProvider>;
}
function Stateful({ initial }: { initial: Persona }) {
  const [persona, setPersona] = useState(initial);
  return <KnowledgeCollections persona={persona} collections={collections} collectionsError={null} onChange={setPersona} />;
}

describe("KnowledgeCollections", () => {
  afterEach(cleanup);

  it("attaches a collection from the picker and detaches one, sending the whole list", async () => {
    const { api, patches } = gateway(false);
    render(<Holder api={api} initial={ada} />);
    expect(screen.getByRole("list", { name: "Collections attached to Ada" }).textContent).toContain("handbook");
    // Only what is not attached yet is offered.
    expect(screen.getAllByRole("option").map((o) => o.textContent)).toEqual(["Choose", "policies"]);
    fireEvent.change(screen.getByLabelText("Collection"), { target: { value: "c2" } });
    fireEvent.click(screen.getByRole("button", { name: "Attach collection" }));
    await screen.findByText("policies attached to Ada.");
    expect(patches).toEqual([{ knowledgeCollections: ["c1", "c2"] }]);
    expect(screen.getByRole("button", { name: "Attach collection" })).toHaveProperty("disabled", true);

    fireEvent.click(screen.getByRole("button", { name: "Detach handbook" }));
    await screen.findByText("handbook detached from Ada.");
    expect(patches).toEqual([{ knowledgeCollections: ["c1", "c2"] }, { knowledgeCollections: ["c2"] }]);
    expect(screen.getByRole("list", { name: "Collections attached to Ada" }).textContent).not.toContain("handbook");
  });

  it("shows a refused change with the API's problem and keeps the list as it was", async () => {
    const { api } = gateway(true);
    render(<Holder api={api} initial={ada} />);
    fireEvent.change(screen.getByLabelText("Collection"), { target: { value: "c2" } });
    fireEvent.click(screen.getByRole("button", { name: "Attach collection" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("collection c2 does not exist");
    await waitFor(() => expect(screen.getByRole("button", { name: "Attach collection" })).toHaveProperty("disabled", false));
    expect(screen.getByRole("list", { name: "Collections attached to Ada" }).textContent).not.toContain("policies");
  });
});
