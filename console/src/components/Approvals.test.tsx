import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ApiClient } from "../api/client";
import { ApiProvider } from "../api/context";
import { ApprovalsAndRuns, type Approval } from "./Approvals";

const at = "2025-01-01T12:00:00Z";
const approval = (id: string, title: string): Approval => ({
  id, role: "editor", title, details: { summary: "Q3" }, status: "pending", onExpiry: "fail", expiresAt: at,
  decidedBy: "", comment: "", decidedAt: null, runId: `run-${id}`, stepId: "ok", requestedBy: "task", createdAt: at,
});
const answer = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** A tenant's approvals behind a fake gateway: decisions change what the list answers. */
function gateway(refuse: Set<string>) {
  const waiting = [approval("a1", "Publish the summary?"), approval("a2", "Delete the archive?")];
  const decisions: { id: string; body: unknown }[] = [];
  const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
    const path = String(url);
    const decided = path.match(/\/api\/v1\/approvals\/(\w+)\/decision$/);
    if (decided && init?.method === "POST") {
      const body = JSON.parse(init.body as string) as { approve: boolean; comment: string };
      decisions.push({ id: decided[1], body });
      const index = waiting.findIndex((a) => a.id === decided[1]);
      const [taken] = waiting.splice(index, 1);
      if (refuse.has(decided[1])) {
        return answer(409, { status: 409, code: "failed_precondition", detail: "the approval was already rejected" });
      }
      return answer(200, { ...taken, status: body.approve ? "approved" : "rejected", comment: body.comment });
    }
    if (path.startsWith("/api/v1/approvals?")) return answer(200, { approvals: [...waiting], nextPageToken: "" });
    if (path.startsWith("/api/v1/runs/")) {
      return answer(200, { id: "run-a1", workflowName: "publish", workflowVersion: 1, status: "running", error: "", steps: [], attempt: 1, createdAt: at, updatedAt: at });
    }
    if (path.startsWith("/api/v1/runs?")) return answer(200, { runs: [], nextPageToken: "" });
    return answer(404, { status: 404, detail: path });
  };
  const store = { load: () => ({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 }), save: () => undefined };
  return { api: new ApiClient(store, "", fetcher as typeof fetch), decisions };
}

describe("ApprovalsAndRuns", () => {
  afterEach(cleanup);

  it("approves with a reason, says so, and re-reads the list", async () => {
    const { api, decisions } = gateway(new Set());
    render(<ApiProvider client={api}><ApprovalsAndRuns /></ApiProvider>);
    const cards = await screen.findAllByTestId("approval");
    expect(cards).toHaveLength(2);
    const publish = cards.find((c) => c.textContent?.includes("Publish the summary?"))!;
    fireEvent.change(within(publish).getByLabelText("Reason (optional)"), { target: { value: "  checked  " } });
    fireEvent.click(within(publish).getByRole("button", { name: "Approve" }));
    await waitFor(() => expect(screen.getByTestId("approval-notice").textContent).toBe("Approved: Publish the summary?"));
    expect(decisions).toEqual([{ id: "a1", body: { approve: true, comment: "checked" } }]);
    await waitFor(() => expect(screen.getAllByTestId("approval")).toHaveLength(1));
    // The decided run's steps open.
    await screen.findByTestId("run-steps");
  });

  it("shows a refused decision with the API's problem, and the list as it now is", async () => {
    const { api, decisions } = gateway(new Set(["a2"]));
    render(<ApiProvider client={api}><ApprovalsAndRuns /></ApiProvider>);
    const cards = await screen.findAllByTestId("approval");
    const archive = cards.find((c) => c.textContent?.includes("Delete the archive?"))!;
    fireEvent.click(within(archive).getByRole("button", { name: "Reject" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toBe("Delete the archive?: the approval was already rejected");
    expect(decisions).toEqual([{ id: "a2", body: { approve: false, comment: "" } }]);
    expect(screen.getByTestId("approval-notice").textContent).toBe("");
    await waitFor(() => expect(screen.getAllByTestId("approval")).toHaveLength(1));
  });
});
