import { FormEvent, useEffect, useMemo, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, useGet, usePaged, usePersonas } from "../api/hooks";
import { LoadMore } from "../components/LoadMore";
import { When } from "../components/Dates";
import { ApprovalsAndRuns } from "../components/Approvals";
import { Schedules } from "../components/Schedules";
import { UsageChart, type DaySeries } from "../components/UsageChart";

interface Task {
  id: string;
  title: string;
  description: string;
  assigneePersonaId: string | null;
  status: string;
  priority: number;
  dueAt: string | null;
  workflowRunId: string;
  parentTaskId: string | null;
  assignmentReason: string;
  outcome: string;
  createdAt: string;
  updatedAt: string;
}

interface TimelineEntry {
  id: string;
  kind: string;
  fromStatus: string | null;
  toStatus: string | null;
  note: string;
  actor: string;
  createdAt: string;
}

interface Budget {
  id: string;
  scope: string;
  scopeId: string;
  maxTokens: number;
  maxToolCalls: number;
  maxCostMicros: number;
  onExceed: string;
  used: { tokens: number; toolCalls: number; costMicros: number };
  reserved: { tokens: number; toolCalls: number; costMicros: number };
}

interface UsageRow {
  day: string;
  personaId: string;
  model: string;
  calls: number;
  promptTokens: number;
  completionTokens: number;
  toolCalls: number;
  costMicros: number;
}

const STATUSES = ["", "queued", "running", "waiting_for_approval", "succeeded", "failed", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// A running task's timeline is read again this often while it is open.
const TIMELINE_REFRESH_MS = 3000;
// Tasks read at a time ("Load more" reads the next ones).
const TASKS_PAGE = 50;


export function WorkPage() {
  const api = useApi();
  const personas = usePersonas();
  const [status, setStatus] = useState("");
  const tasks = usePaged<Task>(`/api/v1/tasks?pageSize=${TASKS_PAGE}${status ? `&status=${status}` : ""}`, "tasks");
  const [selected, setSelected] = useState<string | null>(null);
  const [title, setTitle] = useState("");
  const [description, setDescription] = useState("");
  const [assignee, setAssignee] = useState("");
  const [priority, setPriority] = useState(3);
  const [error, setError] = useState<string | null>(null);
  const names = Object.fromEntries((personas.data?.personas ?? []).map((p) => [p.id, p.name]));

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(null);
    try {
      const task = await api.json<Task>("POST", "/api/v1/tasks", {
        title: title.trim(),
        description: description.trim(),
        priority,
        ...(assignee ? { assigneePersonaId: assignee } : {}),
      });
      setTitle("");
      setDescription("");
      setSelected(task.id);
      tasks.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <div>
      <h1>Work</h1>
      {(tasks.error || error) && <p role="alert" className="error">{tasks.error || error}</p>}
      <section aria-labelledby="tasks-title">
        <h2 id="tasks-title">Tasks</h2>
        <div className="inline">
          <label htmlFor="task-status">Status</label>
          <select id="task-status" value={status} onChange={(e) => setStatus(e.target.value)}>
            {STATUSES.map((s) => <option key={s} value={s}>{s || "any"}</option>)}
          </select>
          <button type="button" onClick={tasks.reload}>Refresh</button>
        </div>
        <table>
          <caption className="visually-hidden">Tasks</caption>
          <thead>
            <tr>
              <th scope="col">Title</th>
              <th scope="col">Status</th>
              <th scope="col">Priority</th>
              <th scope="col">Assignee</th>
              <th scope="col">Due</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {tasks.items.map((t) => (
              <tr key={t.id} aria-selected={t.id === selected} data-testid="task-row">
                <td><button type="button" className="link" onClick={() => setSelected(t.id)}>{t.title}</button></td>
                <td>{t.status}</td>
                <td>{t.priority}</td>
                <td>{t.assigneePersonaId ? names[t.assigneePersonaId] ?? t.assigneePersonaId : "—"}</td>
                <td><When at={t.dueAt} /></td>
                <td><When at={t.updatedAt} /></td>
              </tr>
            ))}
          </tbody>
        </table>
        <LoadMore list={tasks} what="tasks" />
        {tasks.loaded && !tasks.error && tasks.items.length === 0 && <p className="muted">No tasks{status ? ` in status ${status}` : ""}.</p>}
      </section>
      {selected && <TaskDetail key={selected} taskId={selected} onChange={tasks.reload} />}
      <ApprovalsAndRuns />
      <form className="card" onSubmit={create} aria-label="Create a task">
        <h2>Create a task</h2>
        <label htmlFor="t-title">Title</label>
        <input id="t-title" value={title} onChange={(e) => setTitle(e.target.value)} required />
        <label htmlFor="t-description">Description</label>
        <textarea id="t-description" value={description} onChange={(e) => setDescription(e.target.value)} rows={2} />
        <label htmlFor="t-assignee">Assignee</label>
        <select id="t-assignee" value={assignee} onChange={(e) => setAssignee(e.target.value)}>
          <option value="">chosen by skill</option>
          {(personas.data?.personas ?? []).filter((p) => p.status === "active").map((p) => (
            <option key={p.id} value={p.id}>{p.name}</option>
          ))}
        </select>
        <label htmlFor="t-priority">Priority (1 highest)</label>
        <input id="t-priority" type="number" min={1} max={5} value={priority} onChange={(e) => setPriority(Number(e.target.value))} />
        <button type="submit">Create task</button>
      </form>
      <Schedules />
      <BudgetsAndUsage names={names} />
    </div>
  );
}

function TaskDetail({ taskId, onChange }: { taskId: string; onChange: () => void }) {
  const api = useApi();
  const task = useGet<Task>(`/api/v1/tasks/${taskId}`);
  const timeline = usePaged<TimelineEntry>(`/api/v1/tasks/${taskId}/timeline?pageSize=200`, "entries");
  const [error, setError] = useState<string | null>(null);
  const live = task.data && !FINAL.has(task.data.status);
  const { reload: reloadTask } = task;
  const { reload: reloadTimeline } = timeline;

  // Live while the task can still change: its timeline is read again until it ends.
  useEffect(() => {
    if (!live) return;
    const timer = setInterval(() => {
      reloadTask();
      reloadTimeline();
    }, TIMELINE_REFRESH_MS);
    return () => clearInterval(timer);
  }, [live, reloadTask, reloadTimeline]);

  async function cancel() {
    setError(null);
    try {
      await api.json("POST", `/api/v1/tasks/${taskId}/cancel`, { reason: "cancelled from the console" });
      task.reload();
      timeline.reload();
      onChange();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  const t = task.data;
  return (
    <section className="card wide" aria-labelledby="task-detail">
      <h2 id="task-detail">{t ? t.title : "Task"}</h2>
      {(task.error || timeline.error || error) && <p role="alert" className="error">{task.error || timeline.error || error}</p>}
      {t && (
        <dl className="pairs">
          <dt>Status</dt><dd data-testid="task-status">{t.status}</dd>
          <dt>Description</dt><dd>{t.description || "—"}</dd>
          <dt>Assignment</dt><dd>{t.assignmentReason || "—"}</dd>
          <dt>Workflow run</dt><dd>{t.workflowRunId || "not started"}</dd>
          <dt>Outcome</dt><dd>{t.outcome || "—"}</dd>
        </dl>
      )}
      {live && <button type="button" onClick={() => void cancel()}>Cancel task</button>}
      <h3>Timeline</h3>
      <ol className="timeline" data-testid="timeline">
        {timeline.items.map((e) => (
          <li key={e.id}>
            <When at={e.createdAt} /> — <strong>{e.kind}</strong>
            {e.toStatus && ` ${e.fromStatus ?? "∅"} → ${e.toStatus}`}
            {e.note && `: ${e.note}`} <span className="muted">({e.actor})</span>
          </li>
        ))}
      </ol>
      <LoadMore list={timeline} what="timeline entries" />
    </section>
  );
}

const COLOURS = ["#0b57d0", "#b3261e", "#1e6b34", "#8a4b00", "#5b2c83", "#00677d"];

function BudgetsAndUsage({ names }: { names: Record<string, string> }) {
  const budgets = usePaged<Budget>("/api/v1/budgets?pageSize=100", "budgets");
  const usage = useGet<{ rows: UsageRow[] }>("/api/v1/usage");
  const rows = usage.data?.rows ?? [];
  const chart: DaySeries = useMemo(() => {
    const days = [...new Set(rows.map((r) => r.day))].sort();
    const who = [...new Set(rows.map((r) => r.personaId))];
    return {
      days,
      series: who.map((p, i) => ({
        label: p ? names[p] ?? p.slice(0, 8) : "no persona",
        colour: COLOURS[i % COLOURS.length],
        values: days.map((d) => rows.filter((r) => r.day === d && r.personaId === p).reduce((n, r) => n + r.promptTokens + r.completionTokens, 0)),
      })),
    };
  }, [rows, names]);

  return (
    <section aria-labelledby="budgets-title">
      <h2 id="budgets-title">Budgets</h2>
      <div className="inline">
        {/* Read again: budgets set and amounts used since the page opened (the pages opened stay). */}
        <button type="button" onClick={() => { budgets.reload(); usage.reload(); }} aria-label="Refresh budgets and usage">
          Refresh
        </button>
      </div>
      {budgets.error && <p role="alert" className="error">{budgets.error}</p>}
      <table>
        <caption className="visually-hidden">Budgets with what is used and reserved</caption>
        <thead>
          <tr>
            <th scope="col">Scope</th>
            <th scope="col">Tokens used / cap</th>
            <th scope="col">Tool calls used / cap</th>
            <th scope="col">Cost used / cap (USD)</th>
            <th scope="col">On exceed</th>
          </tr>
        </thead>
        <tbody>
          {budgets.items.map((b) => (
            <tr key={b.id}>
              <td>{b.scope} {b.scopeId && <code>{names[b.scopeId] ?? b.scopeId}</code>}</td>
              <td>{b.used.tokens} / {b.maxTokens || "∞"}</td>
              <td>{b.used.toolCalls} / {b.maxToolCalls || "∞"}</td>
              <td>{(b.used.costMicros / 1e6).toFixed(4)} / {b.maxCostMicros ? (b.maxCostMicros / 1e6).toFixed(2) : "∞"}</td>
              <td>{b.onExceed}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <LoadMore list={budgets} what="budgets" />
      <h2 id="usage-title">Usage by day</h2>
      {usage.error && <p role="alert" className="error">{usage.error}</p>}
      {rows.length > 0 ? (
        <UsageChart data={chart} label="Tokens used per day, stacked by persona" />
      ) : (
        <p className="muted">No usage recorded yet.</p>
      )}
      <table>
        <caption className="visually-hidden">Usage by day, persona and model</caption>
        <thead>
          <tr>
            <th scope="col">Day</th>
            <th scope="col">Persona</th>
            <th scope="col">Model</th>
            <th scope="col">Calls</th>
            <th scope="col">Prompt tokens</th>
            <th scope="col">Completion tokens</th>
            <th scope="col">Tool calls</th>
            <th scope="col">Cost (USD)</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.day}/${r.personaId}/${r.model}`}>
              <td>{r.day}</td>
              <td>{r.personaId ? names[r.personaId] ?? r.personaId : "—"}</td>
              <td>{r.model || "—"}</td>
              <td>{r.calls}</td>
              <td>{r.promptTokens}</td>
              <td>{r.completionTokens}</td>
              <td>{r.toolCalls}</td>
              <td>{(r.costMicros / 1e6).toFixed(4)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
