import { FormEvent, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, useGet, usePaged } from "../api/hooks";
import { checkSchedule, type Schedule, type ScheduleDraft } from "../work/schedules";
import { When } from "./Dates";
import { LoadMore } from "./LoadMore";

interface Workflow {
  id: string;
  name: string;
  version: number;
  description: string;
}

const empty: ScheduleDraft = { workflowName: "", workflowVersion: "", cron: "", timeZone: "UTC", input: "", paused: false, note: "" };

/** The tenant's schedules with their next run times; one created for a registered workflow,
 * paused, resumed, deleted. */
export function Schedules() {
  const api = useApi();
  const schedules = usePaged<Schedule>("/api/v1/schedules?pageSize=100", "schedules");
  const workflows = useGet<{ workflows: Workflow[] }>("/api/v1/workflows?pageSize=200");
  const [draft, setDraft] = useState<ScheduleDraft>(empty);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const set = (field: keyof ScheduleDraft) => (e: { target: { value: string } }) => setDraft({ ...draft, [field]: e.target.value });
  // One entry per workflow name: a schedule names the workflow, its version is a field of its own.
  const names = [...new Set((workflows.data?.workflows ?? []).map((w) => w.name))].sort();

  async function run(what: () => Promise<unknown>, said: string) {
    setError(null);
    setNotice("");
    try {
      await what();
      setNotice(said);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      schedules.reload();
    }
  }

  function create(event: FormEvent) {
    event.preventDefault();
    const checked = checkSchedule(draft);
    if (!checked.ok) {
      setError(checked.error);
      setNotice("");
      return;
    }
    void run(async () => {
      await api.json<Schedule>("POST", "/api/v1/schedules", checked.body);
      setDraft(empty);
    }, `${checked.body.workflowName} scheduled at ${checked.body.cron} (${checked.body.timeZone}).`);
  }

  function remove(s: Schedule) {
    if (!window.confirm(`Delete the schedule of ${s.workflowName} at ${s.cron}? Runs it started go on.`)) return;
    void run(() => api.json("DELETE", `/api/v1/schedules/${s.id}`), `Schedule of ${s.workflowName} at ${s.cron} deleted.`);
  }

  const list = schedules.items;
  return (
    <section aria-labelledby="schedules-title">
      <h2 id="schedules-title">Schedules</h2>
      <div className="inline">
        {/* Workflows registered since the page opened are offered after this. */}
        <button type="button" onClick={() => { schedules.reload(); workflows.reload(); }} aria-label="Refresh schedules and workflows">
          Refresh
        </button>
      </div>
      {(schedules.error || workflows.error || error) && (
        <p role="alert" className="error">{error || schedules.error || workflows.error}</p>
      )}
      <p role="status" className="notice" data-testid="schedule-notice">{notice}</p>
      {schedules.loaded && !schedules.error && list.length === 0 && <p className="muted">No schedules yet.</p>}
      {list.length > 0 && (
        <table>
          <caption className="visually-hidden">Schedules of the tenant</caption>
          <thead>
            <tr>
              <th scope="col">Workflow</th>
              <th scope="col">Cron</th>
              <th scope="col">Time zone</th>
              <th scope="col">Next runs</th>
              <th scope="col">Note</th>
              <th scope="col"><span className="visually-hidden">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {list.map((s) => (
              <tr key={s.id} data-testid="schedule-row">
                <td>{s.workflowName} {s.workflowVersion ? `v${s.workflowVersion}` : <span className="muted">(latest)</span>}</td>
                <td><code>{s.cron}</code></td>
                <td>{s.timeZone}</td>
                <td data-testid="schedule-next">
                  {s.paused ? "paused" : s.nextRunTimes.length === 0 ? <span className="muted">none</span> : (
                    <ul className="attempts">
                      {s.nextRunTimes.slice(0, 3).map((t) => <li key={t}><When at={t} /></li>)}
                    </ul>
                  )}
                </td>
                <td>{s.note || <span className="muted">—</span>}</td>
                <td className="actions">
                  {s.paused ? (
                    <button type="button" onClick={() => void run(() => api.json("POST", `/api/v1/schedules/${s.id}/resume`, {}), `Schedule of ${s.workflowName} resumed.`)} aria-label={`Resume schedule of ${s.workflowName} at ${s.cron}`}>Resume</button>
                  ) : (
                    <button type="button" onClick={() => void run(() => api.json("POST", `/api/v1/schedules/${s.id}/pause`, {}), `Schedule of ${s.workflowName} paused.`)} aria-label={`Pause schedule of ${s.workflowName} at ${s.cron}`}>Pause</button>
                  )}
                  <button type="button" className="danger" onClick={() => remove(s)} aria-label={`Delete schedule of ${s.workflowName} at ${s.cron}`}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <LoadMore list={schedules} what="schedules" />
      <form className="card" onSubmit={create} aria-label="Schedule a workflow">
        <h3>Schedule a workflow</h3>
        <label htmlFor="s-workflow">Workflow</label>
        <select id="s-workflow" value={draft.workflowName} onChange={set("workflowName")} required>
          <option value="" disabled>{names.length ? "Choose" : "No workflow registered"}</option>
          {names.map((n) => <option key={n} value={n}>{n}</option>)}
        </select>
        <label htmlFor="s-version">Version (empty: the latest at each start)</label>
        <input id="s-version" inputMode="numeric" value={draft.workflowVersion} onChange={set("workflowVersion")} />
        <label htmlFor="s-cron">Cron expression</label>
        <input id="s-cron" value={draft.cron} onChange={set("cron")} required placeholder="0 9 * * 1-5" aria-describedby="s-cron-help" />
        <p id="s-cron-help" className="muted">Five fields: minute, hour, day of month, month, day of week (or seven: seconds first, year last).</p>
        <label htmlFor="s-zone">Time zone (IANA)</label>
        <input id="s-zone" value={draft.timeZone} onChange={set("timeZone")} placeholder="Europe/Berlin" />
        <label htmlFor="s-input">Input (a JSON object)</label>
        <textarea id="s-input" value={draft.input} onChange={set("input")} rows={2} placeholder="{}" />
        <label htmlFor="s-note">Note</label>
        <input id="s-note" value={draft.note} onChange={set("note")} />
        <label className="check">
          <input type="checkbox" checked={draft.paused} onChange={(e) => setDraft({ ...draft, paused: e.target.checked })} />
          Start paused
        </label>
        <button type="submit">Create schedule</button>
      </form>
    </section>
  );
}
