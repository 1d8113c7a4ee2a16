import { FormEvent, useMemo, useState } from "react";
import { useGet } from "../api/hooks";
import { When } from "./Dates";
import { citationText } from "../knowledge/format";
import { radialLayout, relationText } from "../knowledge/graph";
import type { Collection, Entity, Neighbourhood } from "../knowledge/types";

/** Find an entity of the knowledge graph and see its neighbourhood: drawn (SVG, a radial layout)
 * and listed (the relations with their validity and the passages they were read from). */
export function EntityGraph({ collections }: { collections: Collection[] }) {
  const [query, setQuery] = useState("");
  const [asked, setAsked] = useState<string | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [superseded, setSuperseded] = useState(false);
  const entities = useGet<{ entities: Entity[] }>(
    asked === null ? null : `/api/v1/knowledge/graph/entities?pageSize=50&query=${encodeURIComponent(asked)}`,
  );
  const names = new Map(collections.map((c) => [c.id, c.name]));

  function find(event: FormEvent) {
    event.preventDefault();
    setSelected(null);
    setAsked(query.trim());
  }

  const found = entities.data?.entities ?? [];
  return (
    <section aria-labelledby="graph-title">
      <h2 id="graph-title">Entity graph</h2>
      <form className="inline" onSubmit={find} aria-label="Find entities">
        <label htmlFor="g-query">Entity name</label>
        <input id="g-query" value={query} onChange={(e) => setQuery(e.target.value)} maxLength={200} />
        <button type="submit">Find entities</button>
      </form>
      {entities.error && <p role="alert" className="error">{entities.error}</p>}
      {entities.data && found.length === 0 && (
        <p className="muted">No entity found{asked ? ` for “${asked}”` : ""}.</p>
      )}
      {found.length > 0 && (
        <ul className="entities" aria-label="Entities">
          {found.map((e) => (
            <li key={e.id}>
              <button type="button" className="link" aria-pressed={e.id === selected} onClick={() => setSelected(e.id)}>
                {e.name}
              </button>{" "}
              <span className="muted">
                {e.type}, {e.mentionCount} mentions{e.aliases.length ? `, also ${e.aliases.join(", ")}` : ""}
                {e.collectionIds.length ? ` — in ${e.collectionIds.map((c) => names.get(c) ?? c).join(", ")}` : ""}
              </span>
            </li>
          ))}
        </ul>
      )}
      {selected && (
        <>
          <label className="check">
            <input type="checkbox" checked={superseded} onChange={(e) => setSuperseded(e.target.checked)} /> Include superseded relations
          </label>
          <NeighbourhoodView key={`${selected}/${superseded}`} entityId={selected} includeSuperseded={superseded} onPick={setSelected} />
        </>
      )}
    </section>
  );
}

function NeighbourhoodView({
  entityId,
  includeSuperseded,
  onPick,
}: {
  entityId: string;
  includeSuperseded: boolean;
  onPick: (id: string) => void;
}) {
  const hood = useGet<Neighbourhood>(
    `/api/v1/knowledge/graph/entities/${entityId}/neighbourhood?pageSize=100&includeSuperseded=${includeSuperseded}`,
  );
  const data = hood.data;
  const layout = useMemo(() => (data ? radialLayout(data.entity, data.neighbours, data.relations) : null), [data]);
  const names = useMemo(
    () => new Map([...(data?.neighbours ?? []), ...(data ? [data.entity] : [])].map((e) => [e.id, e.name])),
    [data],
  );
  if (hood.error) return <p role="alert" className="error">{hood.error}</p>;
  if (!data || !layout) return <p role="status">Loading…</p>;
  return (
    <div className="card wide" data-testid="neighbourhood">
      <h3>Around {data.entity.name}</h3>
      <svg
        className="graph"
        viewBox={`0 0 ${layout.width} ${layout.height}`}
        role="img"
        aria-label={`${data.entity.name} and ${data.neighbours.length} related entities; the relations are listed below`}
      >
        {layout.edges.map((e) => (
          <g key={e.id} className={e.superseded ? "edge superseded" : "edge"}>
            <line x1={e.from.x} y1={e.from.y} x2={e.to.x} y2={e.to.y} />
            <text x={e.labelX} y={e.labelY} textAnchor="middle">{e.predicate}</text>
          </g>
        ))}
        {layout.nodes.map((n) => (
          <g key={n.id} className={n.centre ? "node centre" : "node"}>
            <circle cx={n.x} cy={n.y} r={n.centre ? 28 : 20} />
            <text x={n.x} y={n.y + (n.centre ? 44 : 36)} textAnchor="middle">{n.name}</text>
          </g>
        ))}
      </svg>
      <h4>Relations</h4>
      {data.relations.length === 0 && <p className="muted">No relations.</p>}
      <ul className="relations">
        {data.relations.map((r) => (
          <li key={r.id} className={r.supersededBy ? "superseded" : undefined}>
            <strong>{relationText(r, names)}</strong>{" "}
            <span className="muted">
              {r.validFrom ? <>from <When at={r.validFrom} /></> : "since an unknown time"}
              {r.validTo && <> to <When at={r.validTo} /></>}
              {r.supersededBy && `; superseded${r.supersedeReason ? `: ${r.supersedeReason}` : ""}`}
            </span>
            {r.sources.length > 0 && (
              <ul>
                {r.sources.map((s) => (
                  <li key={s.chunkId}>
                    <em>{citationText(s.title, s.citation)}</em>: {s.text}
                  </li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ul>
      {data.neighbours.length > 0 && (
        <>
          <h4>Related entities</h4>
          <ul className="inline-list">
            {data.neighbours.map((n) => (
              <li key={n.id}>
                <button type="button" className="link" onClick={() => onPick(n.id)}>{n.name}</button>
              </li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}
