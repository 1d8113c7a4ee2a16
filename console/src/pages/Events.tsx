import { FormEvent, useEffect, useRef, useState } from "react";
import { useApi } from "../api/context";
import { readSse } from "../api/sse";

interface CloudEvent {
  id: string;
  type: string;
  source: string;
  time: string;
  priority?: string;
  data: unknown;
  [attribute: string]: unknown;
}

// The tail keeps the newest events only: a busy tenant must not grow the page without end.
const KEEP = 500;
const PRIORITIES = ["", "low", "normal", "high", "critical"];

export function EventsPage() {
  const api = useApi();
  const [type, setType] = useState("*");
  const [priority, setPriority] = useState("");
  const [filter, setFilter] = useState({ type: "*", priority: "" });
  const [events, setEvents] = useState<CloudEvent[]>([]);
  const [paused, setPaused] = useState(false);
  const [held, setHeld] = useState<CloudEvent[]>([]);
  const [selected, setSelected] = useState<CloudEvent | null>(null);
  const [state, setState] = useState("connecting");
  const pausedRef = useRef(paused);
  pausedRef.current = paused;

  // Follow the stream for the current filter; a broken connection resumes after the last id.
  useEffect(() => {
    const abort = new AbortController();
    let lastId: string | null = null;
    const add = (event: CloudEvent) => {
      if (pausedRef.current) setHeld((h) => [event, ...h].slice(0, KEEP));
      else setEvents((list) => [event, ...list].slice(0, KEEP));
    };
    (async () => {
      while (!abort.signal.aborted) {
        try {
          const query = new URLSearchParams({ type: filter.type || "*" });
          if (filter.priority) query.set("priority", filter.priority);
          const headers: Record<string, string> = { Accept: "text/event-stream" };
          if (lastId) headers["Last-Event-ID"] = lastId;
          const response = await api.fetch(`/api/v1/events/stream?${query}`, { headers, signal: abort.signal });
          if (!response.ok) {
            setState(`refused (${response.status})`);
            return;
          }
          setState("live");
          await readSse(response, (e) => {
            if (e.id) lastId = e.id;
            add(JSON.parse(e.data) as CloudEvent);
          });
        } catch {
          if (abort.signal.aborted) return;
        }
        setState("reconnecting");
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    })();
    return () => abort.abort();
  }, [api, filter]);

  function apply(event: FormEvent) {
    event.preventDefault();
    setEvents([]);
    setHeld([]);
    setFilter({ type: type.trim() || "*", priority });
  }

  function togglePause() {
    if (paused) {
      setEvents((list) => [...held, ...list].slice(0, KEEP));
      setHeld([]);
    }
    setPaused(!paused);
  }

  return (
    <div className="events">
      <h1>Events</h1>
      <form className="inline" onSubmit={apply} aria-label="Filter events">
        <label htmlFor="ev-type">Type</label>
        <input id="ev-type" value={type} onChange={(e) => setType(e.target.value)} placeholder="persona.* or *" />
        <label htmlFor="ev-priority">Priority</label>
        <select id="ev-priority" value={priority} onChange={(e) => setPriority(e.target.value)}>
          {PRIORITIES.map((p) => (
            <option key={p} value={p}>{p || "any"}</option>
          ))}
        </select>
        <button type="submit">Apply</button>
        <button type="button" onClick={togglePause} aria-pressed={paused}>
          {paused ? `Resume (${held.length} held)` : "Pause"}
        </button>
      </form>
      <p role="status" className="muted" data-testid="events-state">Stream: {state}</p>
      <div className="split">
        <table className="event-list">
          <caption className="visually-hidden">Events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Type</th>
              <th scope="col">Priority</th>
              <th scope="col">Source</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={e.id} aria-selected={selected?.id === e.id} data-testid="event-row">
                <td>{new Date(e.time).toLocaleTimeString()}</td>
                <td>
                  <button type="button" className="link" onClick={() => setSelected(e)}>
                    {e.type}
                  </button>
                </td>
                <td>{e.priority ?? ""}</td>
                <td>{e.source}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <section className="envelope" aria-labelledby="envelope-title">
          <h2 id="envelope-title">Envelope</h2>
          {selected ? (
            <pre data-testid="envelope" tabIndex={0}>{JSON.stringify(selected, null, 2)}</pre>
          ) : (
            <p className="muted">Choose an event to see its envelope.</p>
          )}
        </section>
      </div>
    </div>
  );
}
