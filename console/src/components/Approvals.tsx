import { useEffect, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, useGet, usePaged } from "../api/hooks";
import { LoadMore } from "./LoadMore";
import { When } from "./Dates";

export interface Approval {
  id: string;
  role: string;
  title: string;
  details: Record<string, unknown>;
  status: "pending" | "approved" | "rejected" | "expired";
  onExpiry: string;
  expiresAt: string;
  decidedBy: string;
  comment: string;
  decidedAt: string | null;
  runId: string | null;
  stepId: string;
  requestedBy: string;
  createdAt: string;
}

interface RunStep {
  id: string;
  type: string;
  status: string;
  attempts: number;
  output: Record<string, unknown>;
  error: string;
  approvalId: string | null;
  updatedAt: string;
}

export interface Run {
  id: string;
  workflowName: string;
  workflowVersion: number;
  status: string;
  error: string;
  steps: RunStep[];
  attempt: number;
  createdAt: string;
  updatedAt: string;
}

const DECIDED: Record<string, string> = { approved: "Approved", rejected: "Rejected", expired: "Expired" };
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// Approvals waiting for me, and runs that can still change, are read again this often.
const APPROVALS_REFRESH_MS = 5000;
const RUNS_REFRESH_MS = 3000;
// Runs read at a time, newest first ("Load more" reads older ones).
const RUNS_PAGE = 20;

/** Approvals waiting for the signed-in user (their role's; an admin's: all), decided here, and the
 * workflow runs they hold, live while a run can still change. */
export function ApprovalsAndRuns() {
  const api = useApi();
  const approvals = usePaged<Approval>("/api/v1/approvals?forMe=true&status=pending&pageSize=100", "approvals");
  const runs = usePaged<Run>(`/api/v1/runs?pageSize=${RUNS_PAGE}`, "runs");
  const [comments, setComments] = useState<Record<string, string>>({});
  const [deciding, setDeciding] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const [openRun, setOpenRun] = useState<string | null>(null);
  const { reload: reloadApprovals } = approvals;
  const { reload: reloadRuns } = runs;
  const runList = runs.items;
  const runsLive = runList.some((r) => !FINAL.has(r.status));

  useEffect(() => {
    const timer = setInterval(reloadApprovals, APPROVALS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [reloadApprovals]);
  useEffect(() => {
    if (!runsLive) return;
    const timer = setInterval(reloadRuns, RUNS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [runsLive, reloadRuns]);

  async function decide(approval: Approval, approve: boolean) {
    setError(null);
    setNotice("");
    setDeciding(approval.id);
    try {
      const decided = await api.json<Approval>("POST", `/api/v1/approvals/${approval.id}/decision`, {
        approve,
        comment: (comments[approval.id] ?? "").trim(),
      });
      setNotice(`${DECIDED[decided.status] ?? decided.status}: ${decided.title}`);
      setComments((c) => {
        const rest = { ...c };
        delete rest[approval.id];
        return rest;
      });
      if (decided.runId) setOpenRun(decided.runId);
    } catch (e) {
      setError(`${approval.title}: ${messageOf(e)}`);
    } finally {
      setDeciding(null);
      reloadApprovals();
      reloadRuns();
    }
  }

  const waiting = approvals.items;
  return (
    <>
      <section aria-labelledby="approvals-title">
        <h2 id="approvals-title">Approvals waiting for me</h2>
        {(approvals.error || error) && <p role="alert" className="error">{error || approvals.error}</p>}
        <p role="status" className="notice" data-testid="approval-notice">{notice}</p>
        {approvals.loaded && !approvals.error && waiting.length === 0 && <p className="muted">Nothing waits for your decision.</p>}
        <ul className="approvals">
          {waiting.map((a) => (
            <li key={a.id} className="card wide" data-testid="approval">
              <h3 id={`approval-${a.id}`}>{a.title}</h3>
              <dl className="pairs">
                <dt>Role</dt><dd>{a.role}</dd>
                <dt>Asked by</dt><dd>{a.requestedBy || "—"}</dd>
                {a.runId && (<><dt>Workflow run</dt><dd><code>{a.runId}</code> (step {a.stepId})</dd></>)}
                <dt>Expires</dt><dd><When at={a.expiresAt} /> (then: {a.onExpiry})</dd>
                {Object.keys(a.details).length > 0 && (<><dt>Details</dt><dd><pre>{JSON.stringify(a.details, null, 2)}</pre></dd></>)}
              </dl>
              <label htmlFor={`reason-${a.id}`}>Reason (optional)</label>
              <textarea
                id={`reason-${a.id}`}
                rows={2}
                maxLength={2000}
                value={comments[a.id] ?? ""}
                onChange={(e) => setComments((c) => ({ ...c, [a.id]: e.target.value }))}
              />
              <div className="actions">
                <button type="button" disabled={deciding === a.id} aria-describedby={`approval-${a.id}`} onClick={() => void decide(a, true)}>Approve</button>
                <button type="button" className="danger" disabled={deciding === a.id} aria-describedby={`approval-${a.id}`} onClick={() => void decide(a, false)}>Reject</button>
              </div>
            </li>
          ))}
        </ul>
        <LoadMore list={approvals} what="approvals" />
      </section>
      <section aria-labelledby="runs-title">
        <h2 id="runs-title">Workflow runs</h2>
        {runs.error && <p role="alert" className="error">{runs.error}</p>}
        <table>
          <caption className="visually-hidden">Workflow runs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Workflow</th>
              <th scope="col">Status</th>
              <th scope="col">Started</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {runList.map((r) => (
              <tr key={r.id} aria-selected={r.id === openRun} data-testid="run-row" data-status={r.status}>
                <td><button type="button" className="link" onClick={() => setOpenRun(r.id)}>{r.workflowName} v{r.workflowVersion}</button></td>
                <td data-testid="run-status">{r.status}{r.error && <span className="error">: {r.error}</span>}</td>
                <td><When at={r.createdAt} /></td>
                <td><When at={r.updatedAt} /></td>
              </tr>
            ))}
          </tbody>
        </table>
        <LoadMore list={runs} what="runs" />
        {runs.loaded && !runs.error && runList.length === 0 && <p className="muted">No workflow runs yet.</p>}
        {openRun && <RunSteps key={openRun} runId={openRun} />}
      </section>
    </>
  );
}

/** A run with its steps (the list of runs does not carry them), re-read while it can change. */
function RunSteps({ runId }: { runId: string }) {
  const run = useGet<Run>(`/api/v1/runs/${runId}`);
  const live = run.data !== null && !FINAL.has(run.data.status);
  const { reload } = run;
  useEffect(() => {
    if (!live) return;
    const timer = setInterval(reload, RUNS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [live, reload]);
  if (run.error) return <p role="alert" className="error">{run.error}</p>;
  const r = run.data;
  if (!r) return <p role="status">Loading…</p>;
  return (
    <div className="card wide" data-testid="run-steps">
      <h3>Steps of {r.workflowName} v{r.workflowVersion} (attempt {r.attempt}): {r.status}</h3>
      <ol className="timeline">
        {r.steps.map((s) => (
          <li key={s.id}>
            <strong>{s.id}</strong> ({s.type}): <span data-testid="step-status">{s.status}</span>
            {s.attempts > 1 && `, ${s.attempts} attempts`}
            {s.error && <span className="error"> — {s.error}</span>} <span className="muted">(<When at={s.updatedAt} />)</span>
          </li>
        ))}
      </ol>
    </div>
  );
}
