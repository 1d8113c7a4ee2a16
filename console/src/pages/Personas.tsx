import { FormEvent, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, useGet, usePersonas } from "../api/hooks";
import type { Coworker, Persona } from "../api/types";
import type { Collection } from "../knowledge/types";
import { attach, attachable, attachedOf, detach, labelOf } from "../personas/collections";

interface Draft {
  name: string;
  role: string;
  skills: string;
  tone: string;
  instructions: string;
}

const empty: Draft = { name: "", role: "", skills: "", tone: "", instructions: "" };

function bodyOf(d: Draft) {
  return {
    name: d.name.trim(),
    role: d.role.trim(),
    skills: d.skills.split(",").map((s) => s.trim()).filter(Boolean),
    tone: d.tone.trim(),
    instructions: d.instructions.trim(),
  };
}

export function PersonasPage() {
  const api = useApi();
  const personas = usePersonas(true);
  // Read again when a persona's editor opens: collections made since the page opened are offered.
  const collections = useGet<{ collections: Collection[] }>("/api/v1/knowledge/collections?pageSize=200");
  const allCollections = collections.data?.collections ?? [];
  const [editing, setEditing] = useState<Persona | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function archive(p: Persona) {
    if (!window.confirm(`Archive ${p.name}? It stops answering.`)) return;
    try {
      await api.json("POST", `/api/v1/personas/${p.id}/archive`);
      personas.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <div>
      <h1>Personas</h1>
      {(personas.error || error) && <p role="alert" className="error">{personas.error || error}</p>}
      <table>
        <caption className="visually-hidden">Personas of the tenant</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Role</th>
            <th scope="col">Skills</th>
            <th scope="col">Knowledge</th>
            <th scope="col">Status</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {(personas.data?.personas ?? []).map((p) => (
            <tr key={p.id}>
              <td>{p.name}</td>
              <td>{p.role}</td>
              <td>{p.skills.join(", ")}</td>
              <td data-testid="persona-collections">{attachedOf(p.knowledgeCollections ?? [], allCollections).map(labelOf).join(", ")}</td>
              <td>{p.status}</td>
              <td className="actions">
                <button type="button" onClick={() => { setEditing(p); collections.reload(); }} aria-label={`Edit ${p.name}`}>Edit</button>
                {p.status === "active" && (
                  <button type="button" onClick={() => void archive(p)} aria-label={`Archive ${p.name}`}>Archive</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {editing ? (
        <>
          <PersonaForm key={editing.id} persona={editing} onDone={() => { setEditing(null); personas.reload(); }} />
          <KnowledgeCollections
            persona={editing}
            collections={allCollections}
            collectionsError={collections.error}
            onChange={(changed) => { setEditing(changed); personas.reload(); }}
          />
          <Coworkers persona={editing} all={personas.data?.personas ?? []} />
        </>
      ) : (
        <PersonaForm key="new" persona={null} onDone={personas.reload} />
      )}
    </div>
  );
}

function PersonaForm({ persona, onDone }: { persona: Persona | null; onDone: () => void }) {
  const api = useApi();
  const [draft, setDraft] = useState<Draft>(
    persona
      ? { name: persona.name, role: persona.role, skills: persona.skills.join(", "), tone: persona.tone, instructions: persona.instructions }
      : empty,
  );
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const set = (field: keyof Draft) => (e: { target: { value: string } }) => setDraft({ ...draft, [field]: e.target.value });

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    try {
      if (persona) await api.json("PATCH", `/api/v1/personas/${persona.id}`, bodyOf(draft));
      else await api.json("POST", "/api/v1/personas", bodyOf(draft));
      setNotice(persona ? `${draft.name} saved.` : `${draft.name} created.`);
      if (!persona) setDraft(empty);
      onDone();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  const title = persona ? `Edit ${persona.name}` : "Create a persona";
  return (
    <form className="card" onSubmit={submit} aria-label={title}>
      <h2>{title}</h2>
      <label htmlFor="p-name">Name</label>
      <input id="p-name" value={draft.name} onChange={set("name")} required />
      <label htmlFor="p-role">Role</label>
      <input id="p-role" value={draft.role} onChange={set("role")} required />
      <label htmlFor="p-skills">Skills (comma-separated)</label>
      <input id="p-skills" value={draft.skills} onChange={set("skills")} />
      <label htmlFor="p-tone">Tone</label>
      <input id="p-tone" value={draft.tone} onChange={set("tone")} />
      <label htmlFor="p-instructions">Instructions</label>
      <textarea id="p-instructions" value={draft.instructions} onChange={set("instructions")} rows={3} />
      <button type="submit">{persona ? "Save" : "Create persona"}</button>
      {error && <p role="alert" className="error">{error}</p>}
      <p role="status" className="notice">{notice}</p>
    </form>
  );
}

function Coworkers({ persona, all }: { persona: Persona; all: Persona[] }) {
  const api = useApi();
  const path = `/api/v1/personas/${persona.id}/coworkers`;
  const coworkers = useGet<{ coworkers: Coworker[] }>(path);
  const [other, setOther] = useState("");
  const [relation, setRelation] = useState("");
  const [handover, setHandover] = useState("");
  const [error, setError] = useState<string | null>(null);

  async function run(what: () => Promise<unknown>) {
    setError(null);
    try {
      await what();
      coworkers.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <section className="card" aria-labelledby="coworkers">
      <h2 id="coworkers">Co-workers of {persona.name}</h2>
      <ul>
        {(coworkers.data?.coworkers ?? []).map((c) => (
          <li key={c.coworkerId}>
            {c.coworkerName} ({c.coworkerRole}) — {c.relation || "no relation given"}{" "}
            <button type="button" onClick={() => void run(() => api.json("DELETE", `${path}/${c.coworkerId}`))} aria-label={`Remove co-worker ${c.coworkerName}`}>
              Remove
            </button>
          </li>
        ))}
      </ul>
      <form className="inline" onSubmit={(e) => { e.preventDefault(); void run(() => api.json("PUT", `${path}/${other}`, { relation: relation.trim(), handover: handover.trim() })); }}>
        <label htmlFor="cw-persona">Co-worker</label>
        <select id="cw-persona" value={other} onChange={(e) => setOther(e.target.value)} required>
          <option value="" disabled>Choose</option>
          {all.filter((p) => p.id !== persona.id && p.status === "active").map((p) => (
            <option key={p.id} value={p.id}>{p.name}</option>
          ))}
        </select>
        <label htmlFor="cw-relation">Relation</label>
        <input id="cw-relation" value={relation} onChange={(e) => setRelation(e.target.value)} />
        <label htmlFor="cw-handover">Handover</label>
        <input id="cw-handover" value={handover} onChange={(e) => setHandover(e.target.value)} />
        <button type="submit">Set co-worker</button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
    </section>
  );
}

/** Attach and detach the knowledge collections the persona answers from (PATCH replaces the
 * whole list, so each change sends the list as it should become). */
export function KnowledgeCollections({
  persona,
  collections,
  collectionsError,
  onChange,
}: {
  persona: Persona;
  collections: Collection[];
  collectionsError: string | null;
  onChange: (changed: Persona) => void;
}) {
  const api = useApi();
  const ids = persona.knowledgeCollections ?? [];
  const [chosen, setChosen] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const attached = attachedOf(ids, collections);
  const offered = attachable(ids, collections);

  async function save(next: string[], said: string) {
    setError(null);
    setNotice("");
    setBusy(true);
    try {
      const changed = await api.json<Persona>("PATCH", `/api/v1/personas/${persona.id}`, { knowledgeCollections: next });
      setNotice(said);
      setChosen("");
      onChange(changed);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    const change = attach(ids, chosen);
    if (!change.ok) {
      setError(change.error);
      return;
    }
    const name = collections.find((c) => c.id === chosen)?.name ?? chosen;
    void save(change.ids, `${name} attached to ${persona.name}.`);
  }

  return (
    <section className="card" aria-labelledby="persona-knowledge">
      <h2 id="persona-knowledge">Knowledge of {persona.name}</h2>
      <p className="muted">Every message to {persona.name} searches these collections; the reply cites what it used.</p>
      {attached.length === 0 ? (
        <p className="muted" data-testid="no-collections">No collection attached.</p>
      ) : (
        <ul aria-label={`Collections attached to ${persona.name}`} data-testid="attached-collections">
          {attached.map((a) => (
            <li key={a.id}>
              {labelOf(a)}{" "}
              <button
                type="button"
                disabled={busy}
                onClick={() => void save(detach(ids, a.id), `${labelOf(a)} detached from ${persona.name}.`)}
                aria-label={`Detach ${labelOf(a)}`}
              >
                Detach
              </button>
            </li>
          ))}
        </ul>
      )}
      <form className="inline" onSubmit={submit}>
        <label htmlFor="pk-collection">Collection</label>
        <select id="pk-collection" value={chosen} onChange={(e) => setChosen(e.target.value)} required>
          <option value="" disabled>{offered.length ? "Choose" : "No other collection"}</option>
          {offered.map((c) => (
            <option key={c.id} value={c.id}>{c.name}</option>
          ))}
        </select>
        <button type="submit" disabled={busy || offered.length === 0}>Attach collection</button>
      </form>
      {(collectionsError || error) && <p role="alert" className="error">{error || collectionsError}</p>}
      <p role="status" className="notice">{notice}</p>
    </section>
  );
}
