import { ChangeEvent, FormEvent, useEffect, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, usePaged } from "../api/hooks";
import {
  answerOf,
  deliveriesLive,
  draftOf,
  lastAttempt,
  parseEventTypes,
  previousSecretLive,
  webhookChanges,
  type Delivery,
  type DeliveryState,
  type Webhook,
  type WebhookDraft,
  type WebhookWithSecret,
} from "../admin/webhooks";
import { When } from "../components/Dates";
import { LoadMore } from "../components/LoadMore";

// An open delivery log is read again this often while a delivery waits for an attempt, and
// less often otherwise (new events queue new deliveries at any time).
const DELIVERIES_LIVE_REFRESH_MS = 5000;
const DELIVERIES_IDLE_REFRESH_MS = 15000;
const STATES: DeliveryState[] = ["pending", "succeeded", "dead"];
// How long a rotated-out secret keeps verifying (the API's default; at most 7 days).
const ROTATION_OVERLAP_HOURS = 24;

type ShownSecret = WebhookWithSecret & { rotated: boolean };

export function AdminWebhooksPage() {
  const api = useApi();
  const webhooks = usePaged<Webhook>("/api/v1/webhooks?pageSize=200", "webhooks");
  const [url, setUrl] = useState("");
  const [types, setTypes] = useState("");
  const [description, setDescription] = useState("");
  // A signing secret just made (a new webhook's, or a rotation's): kept in this component's
  // state only, never stored, gone with "I stored it".
  const [shown, setShown] = useState<ShownSecret | null>(null);
  const [open, setOpen] = useState<Webhook | null>(null);
  const [editing, setEditing] = useState<Webhook | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setNotice("");
    const parsed = parseEventTypes(types);
    if (!parsed.ok) {
      setError(parsed.error);
      return;
    }
    try {
      const made = await api.json<WebhookWithSecret>("POST", "/api/v1/webhooks", {
        url: url.trim(),
        eventTypes: parsed.types,
        description: description.trim(),
      });
      setShown({ ...made, rotated: false });
      setUrl("");
      setTypes("");
      setDescription("");
      webhooks.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  async function rotate(w: Webhook) {
    if (
      !window.confirm(
        `Rotate the signing secret of ${w.url}? A new secret signs from now on; the current one keeps verifying for ${ROTATION_OVERLAP_HOURS} hours, while the receiver switches.`,
      )
    ) {
      return;
    }
    setError(null);
    setNotice("");
    try {
      const rotated = await api.json<WebhookWithSecret>("POST", `/api/v1/webhooks/${w.id}/rotate-secret`, {
        previousSecretTtlSeconds: ROTATION_OVERLAP_HOURS * 3600,
      });
      setShown({ ...rotated, rotated: true });
      webhooks.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  async function remove(w: Webhook) {
    if (!window.confirm(`Delete the webhook to ${w.url}? Its delivery log and secret go with it.`)) return;
    setError(null);
    try {
      await api.json("DELETE", `/api/v1/webhooks/${w.id}`);
      if (open?.id === w.id) setOpen(null);
      if (editing?.id === w.id) setEditing(null);
      if (shown?.webhook.id === w.id) setShown(null);
      setNotice(`Webhook to ${w.url} deleted.`);
      webhooks.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  function saved(w: Webhook) {
    setEditing(null);
    setNotice(`Webhook to ${w.url} updated.`);
    if (open?.id === w.id) setOpen(w);
    webhooks.reload();
  }

  const list = webhooks.items;
  return (
    <div>
      <h1>Webhooks</h1>
      {(webhooks.error || error) && <p role="alert" className="error">{error || webhooks.error}</p>}
      <p role="status" className="notice" data-testid="webhook-notice">{notice}</p>
      {shown && (
        <div className="card secret" role="alert" aria-labelledby="secret-once">
          <h2 id="secret-once">
            {shown.rotated ? "New signing secret" : "Signing secret"} of {shown.webhook.url}: shown this once
          </h2>
          <p>Store it with the receiver now: it verifies the <code>webhook-signature</code> header, and the console cannot show it again.</p>
          {shown.rotated && shown.webhook.previousSecretExpiresAt && (
            <p data-testid="previous-secret-until">
              The previous secret still verifies until <When at={shown.webhook.previousSecretExpiresAt} />: deliveries carry
              a signature by each until then.
            </p>
          )}
          <label htmlFor="new-secret">{shown.rotated ? "New signing secret" : "Signing secret"}</label>
          <input id="new-secret" readOnly value={shown.secret} onFocus={(e) => e.currentTarget.select()} data-testid="new-webhook-secret" />
          <button type="button" onClick={() => void navigator.clipboard?.writeText(shown.secret)}>Copy</button>
          <button type="button" onClick={() => setShown(null)}>I stored it</button>
        </div>
      )}
      <table>
        <caption className="visually-hidden">Webhooks of the tenant</caption>
        <thead>
          <tr>
            <th scope="col">URL</th>
            <th scope="col">Event types</th>
            <th scope="col">Description</th>
            <th scope="col">Enabled</th>
            <th scope="col">Created</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {list.map((w) => (
            <tr key={w.id} data-testid="webhook-row">
              <td>
                <code>{w.url}</code>
                {previousSecretLive(w) && (
                  <div className="muted" data-testid="previous-secret">
                    previous secret verifies until <When at={w.previousSecretExpiresAt} />
                  </div>
                )}
              </td>
              <td data-testid="webhook-event-types">{w.eventTypes.join(", ")}</td>
              <td data-testid="webhook-description">{w.description || <span className="muted">—</span>}</td>
              <td data-testid="webhook-enabled">{w.enabled ? "yes" : "no"}</td>
              <td><When at={w.createdAt} /></td>
              <td className="actions">
                <button type="button" onClick={() => setOpen(w)} aria-label={`Deliveries of ${w.url}`} aria-pressed={open?.id === w.id}>
                  Deliveries
                </button>
                <button type="button" onClick={() => setEditing(w)} aria-label={`Edit webhook ${w.url}`} aria-pressed={editing?.id === w.id}>
                  Edit
                </button>
                <button type="button" onClick={() => void rotate(w)} aria-label={`Rotate secret of ${w.url}`}>
                  Rotate secret
                </button>
                <button type="button" className="danger" onClick={() => void remove(w)} aria-label={`Delete webhook ${w.url}`}>Delete</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <LoadMore list={webhooks} what="webhooks" />
      {webhooks.loaded && !webhooks.error && list.length === 0 && <p className="muted">No webhooks yet: subscribe a URL below.</p>}
      {/* Keys apart: siblings with one key (the webhook's id) would be mixed up by React. */}
      {editing && <EditWebhook key={`edit-${editing.id}`} webhook={editing} onSaved={saved} onClose={() => setEditing(null)} />}
      {open && <DeliveryLog key={`log-${open.id}`} webhook={open} />}
      <form className="card" onSubmit={create} aria-label="Create a webhook">
        <h2>Create a webhook</h2>
        <label htmlFor="w-url">Receiver URL</label>
        <input id="w-url" type="url" value={url} onChange={(e) => setUrl(e.target.value)} required placeholder="https://hooks.example.com/edrs" />
        <label htmlFor="w-types">Event types</label>
        <input id="w-types" value={types} onChange={(e) => setTypes(e.target.value)} required aria-describedby="w-types-help" />
        <p id="w-types-help" className="muted">
          Separated by commas or spaces: an exact type (<code>task.task_created</code>), a domain (<code>task.*</code>) or <code>*</code> for all.
        </p>
        <label htmlFor="w-description">Description</label>
        <input id="w-description" value={description} onChange={(e) => setDescription(e.target.value)} />
        <button type="submit">Create webhook</button>
      </form>
    </div>
  );
}

/** A webhook's URL, event types, description and enabled state, changed with
 * `PATCH /webhooks/{id}` (only what changed is sent); its secret is rotated, never edited. */
function EditWebhook({ webhook, onSaved, onClose }: { webhook: Webhook; onSaved: (w: Webhook) => void; onClose: () => void }) {
  const api = useApi();
  const [draft, setDraft] = useState<WebhookDraft>(() => draftOf(webhook));
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function save(event: FormEvent) {
    event.preventDefault();
    setError(null);
    const edited = webhookChanges(webhook, draft);
    if (!edited.ok) {
      setError(edited.error);
      return;
    }
    setBusy(true);
    try {
      onSaved(await api.json<Webhook>("PATCH", `/api/v1/webhooks/${webhook.id}`, edited.changes));
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }

  const change = (field: keyof WebhookDraft) => (e: ChangeEvent<HTMLInputElement>) =>
    setDraft((d) => ({ ...d, [field]: field === "enabled" ? e.target.checked : e.target.value }));
  return (
    <form className="card" onSubmit={save} aria-label={`Edit webhook ${webhook.url}`}>
      <h2>Edit the webhook to {webhook.url}</h2>
      {error && <p role="alert" className="error">{error}</p>}
      <label htmlFor="e-url">Receiver URL</label>
      <input id="e-url" type="url" value={draft.url} onChange={change("url")} required />
      <label htmlFor="e-types">Event types</label>
      <input id="e-types" value={draft.eventTypes} onChange={change("eventTypes")} required aria-describedby="w-types-help" />
      <label htmlFor="e-description">Description</label>
      <input id="e-description" value={draft.description} onChange={change("description")} />
      <label className="check">
        <input type="checkbox" checked={draft.enabled} onChange={change("enabled")} /> Enabled (a disabled webhook is sent nothing)
      </label>
      <div className="actions">
        <button type="submit" disabled={busy}>Save changes</button>
        <button type="button" onClick={onClose}>Close</button>
      </div>
    </form>
  );
}

function DeliveryLog({ webhook }: { webhook: Webhook }) {
  const api = useApi();
  const [state, setState] = useState<DeliveryState | "">("");
  const path = `/api/v1/webhooks/${webhook.id}/deliveries?pageSize=50${state ? `&state=${state}` : ""}`;
  const deliveries = usePaged<Delivery>(path, "deliveries");
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const list = deliveries.items;
  const live = deliveriesLive(list);
  const { reload } = deliveries;

  useEffect(() => {
    const timer = setInterval(reload, live ? DELIVERIES_LIVE_REFRESH_MS : DELIVERIES_IDLE_REFRESH_MS);
    return () => clearInterval(timer);
  }, [live, reload]);

  async function replay(d: Delivery) {
    setError(null);
    setNotice("");
    try {
      await api.json("POST", `/api/v1/webhooks/${webhook.id}/deliveries/${d.id}/replay`);
      setNotice(`${d.id} queued again.`);
      reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <section className="card wide" aria-labelledby="deliveries-title">
      <h2 id="deliveries-title">Delivery log of {webhook.url}</h2>
      <div className="inline">
        <label htmlFor="d-state">State</label>
        <select id="d-state" value={state} onChange={(e) => setState(e.target.value as DeliveryState | "")}>
          <option value="">all</option>
          {STATES.map((s) => <option key={s} value={s}>{s === "dead" ? "dead (dead letters)" : s}</option>)}
        </select>
        <button type="button" onClick={reload}>Refresh</button>
      </div>
      {(deliveries.error || error) && <p role="alert" className="error">{error || deliveries.error}</p>}
      <p role="status" className="notice">{notice}</p>
      {deliveries.loaded && !deliveries.error && list.length === 0 && <p className="muted" data-testid="no-deliveries">No deliveries{state ? ` in state ${state}` : ""} yet.</p>}
      {list.length > 0 && (
        <table className="deliveries">
          <caption className="visually-hidden">Deliveries, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Event</th>
              <th scope="col">State</th>
              <th scope="col">Attempts</th>
              <th scope="col">Last answer</th>
              <th scope="col">Next attempt</th>
              <th scope="col">Queued</th>
              <th scope="col"><span className="visually-hidden">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {list.map((d) => {
              const last = lastAttempt(d);
              return (
                <tr key={d.id} data-testid="delivery-row">
                  <td>{d.eventType}<br /><code className="muted">{d.id}</code></td>
                  <td data-testid="delivery-state">{d.state}</td>
                  <td>
                    {d.attempts.length === 0 ? (
                      <span className="muted">none yet</span>
                    ) : (
                      <ol className="attempts">
                        {[...d.attempts].sort((a, b) => a.number - b.number).map((a) => (
                          <li key={a.number}>
                            <When at={a.attemptedAt} />: {answerOf(a)} ({a.latencyMs} ms)
                          </li>
                        ))}
                      </ol>
                    )}
                  </td>
                  <td data-testid="delivery-answer">{last ? answerOf(last) : <span className="muted">—</span>}</td>
                  <td><When at={d.nextAttemptAt} /></td>
                  <td><When at={d.createdAt} /></td>
                  <td>
                    {d.state === "dead" && (
                      <button type="button" onClick={() => void replay(d)} aria-label={`Replay delivery ${d.id}`}>Replay</button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <LoadMore list={deliveries} what="deliveries" />
    </section>
  );
}
