import { FormEvent, useState } from "react";
import { useNavigate, useParams } from "react-router-dom";
import { useApi } from "../api/context";
import { messageOf, useGet, usePersonas } from "../api/hooks";
import type { Relationship, ScoredMemory } from "../api/types";
import { When } from "../components/Dates";
import { PersonaPicker } from "../components/PersonaPicker";

export function RelationshipPage() {
  const { personaId } = useParams();
  const navigate = useNavigate();
  const personas = usePersonas();
  return (
    <div>
      <h1>What they know about you</h1>
      <PersonaPicker
        personas={personas.data?.personas ?? []}
        value={personaId}
        onChange={(id) => navigate(`/relationship/${id}`)}
      />
      {personaId && <RelationshipView key={personaId} personaId={personaId} />}
    </div>
  );
}

function RelationshipView({ personaId }: { personaId: string }) {
  const api = useApi();
  const path = `/api/v1/personas/${personaId}/relationships/me`;
  const relationship = useGet<Relationship>(path);
  const [query, setQuery] = useState("");
  const [asked, setAsked] = useState("");
  const memories = useGet<{ memories: ScoredMemory[] }>(
    `/api/v1/personas/${personaId}/memories?limit=20&query=${encodeURIComponent(asked)}`,
  );
  const [attribute, setAttribute] = useState("preference");
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");

  async function act(what: () => Promise<unknown>, done: string) {
    setError(null);
    try {
      await what();
      setNotice(done);
      relationship.reload();
      memories.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  function stateFact(event: FormEvent) {
    event.preventDefault();
    void act(() => api.json("POST", `${path}/facts`, { attribute: attribute.trim(), value: value.trim() }), "Fact saved.").then(() => setValue(""));
  }

  function forgetMe() {
    if (!window.confirm("Forget everything this persona knows about you: facts, memories and conversations?")) return;
    void act(() => api.json("DELETE", path), "Forgotten.");
  }

  const r = relationship.data;
  return (
    <div className="relationship">
      {relationship.error && <p role="alert" className="error">{relationship.error}</p>}
      {error && <p role="alert" className="error">{error}</p>}
      <p className="visually-hidden" aria-live="polite">{notice}</p>
      {r && (
        <>
          <section aria-labelledby="prefs">
            <h2 id="prefs">Preferences, likes and dislikes</h2>
            <dl className="pairs">
              <dt>Preferences</dt>
              <dd data-testid="preferences">{r.preferences.join(", ") || "none"}</dd>
              <dt>Likes</dt>
              <dd>{r.likes.join(", ") || "none"}</dd>
              <dt>Dislikes</dt>
              <dd>{r.dislikes.join(", ") || "none"}</dd>
              <dt>Interactions</dt>
              <dd>
                {r.interactionCount} (first <When at={r.firstInteractionAt} />, last <When at={r.lastInteractionAt} />)
              </dd>
            </dl>
          </section>
          <section aria-labelledby="facts">
            <h2 id="facts">Facts and their history</h2>
            <table>
              <caption className="visually-hidden">Facts, current and superseded</caption>
              <thead>
                <tr>
                  <th scope="col">Attribute</th>
                  <th scope="col">Value</th>
                  <th scope="col">Valid from</th>
                  <th scope="col">Valid to</th>
                  <th scope="col">Status</th>
                  <th scope="col"><span className="visually-hidden">Actions</span></th>
                </tr>
              </thead>
              <tbody>
                {r.facts.map((f) => (
                  <tr key={f.id} className={f.status}>
                    <td>{f.attribute}</td>
                    <td>{f.status === "superseded" ? <del>{f.value}</del> : f.value}</td>
                    <td><When at={f.validFrom} /></td>
                    <td><When at={f.validTo} /></td>
                    <td>{f.status}</td>
                    <td>
                      <button type="button" onClick={() => void act(() => api.json("DELETE", `${path}/facts/${f.id}`), "Fact deleted.")} aria-label={`Delete fact ${f.attribute}: ${f.value}`}>
                        Delete
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <form className="inline" onSubmit={stateFact}>
              <label htmlFor="fact-attribute">Attribute</label>
              <input id="fact-attribute" value={attribute} onChange={(e) => setAttribute(e.target.value)} required />
              <label htmlFor="fact-value">Value</label>
              <input id="fact-value" value={value} onChange={(e) => setValue(e.target.value)} required />
              <button type="submit">State fact</button>
            </form>
          </section>
        </>
      )}
      <section aria-labelledby="memories">
        <h2 id="memories">Memories</h2>
        <form className="inline" onSubmit={(e) => { e.preventDefault(); setAsked(query); }}>
          <label htmlFor="memory-query">Search memories</label>
          <input id="memory-query" value={query} onChange={(e) => setQuery(e.target.value)} />
          <button type="submit">Search</button>
        </form>
        {memories.error && <p role="alert" className="error">{memories.error}</p>}
        <table>
          <caption className="visually-hidden">Memories with the parts of their score</caption>
          <thead>
            <tr>
              <th scope="col">Memory</th>
              <th scope="col">Score</th>
              <th scope="col">Recency</th>
              <th scope="col">Importance</th>
              <th scope="col">Relevance</th>
              <th scope="col">When</th>
            </tr>
          </thead>
          <tbody>
            {(memories.data?.memories ?? []).map((m) => (
              <tr key={m.memory.id}>
                <td>{m.memory.text}</td>
                <td>{m.score.toFixed(2)}</td>
                <td>{m.recency.toFixed(2)}</td>
                <td>{m.importance.toFixed(2)}</td>
                <td>{m.relevance.toFixed(2)}</td>
                <td><When at={m.memory.createdAt} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section aria-labelledby="forget">
        <h2 id="forget">Forget me</h2>
        <button type="button" className="danger" onClick={forgetMe}>
          Forget everything about me
        </button>
      </section>
    </div>
  );
}
