// An entity's neighbourhood laid out for drawing: the entity in the middle, its neighbours on a
// circle around it, one edge per relation. A radial layout is all a one-hop neighbourhood needs,
// so no graph layout library is loaded.
import type { Entity, Relation } from "./types";

export interface LaidNode {
  id: string;
  name: string;
  type: string;
  x: number;
  y: number;
  centre: boolean;
}

export interface LaidEdge {
  id: string;
  from: LaidNode;
  to: LaidNode;
  predicate: string;
  superseded: boolean;
  /** Where the edge's label goes: the middle of the edge. */
  labelX: number;
  labelY: number;
}

export interface Layout {
  width: number;
  height: number;
  nodes: LaidNode[];
  edges: LaidEdge[];
}

const round = (n: number) => Math.round(n * 10) / 10;

export function radialLayout(
  entity: Entity,
  neighbours: Entity[],
  relations: Relation[],
  size = 480,
): Layout {
  const cx = size / 2;
  const cy = size / 2;
  const radius = size / 2 - 70;
  const centre: LaidNode = { id: entity.id, name: entity.name, type: entity.type, x: cx, y: cy, centre: true };
  const others = neighbours.filter((n, i) => n.id !== entity.id && neighbours.findIndex((m) => m.id === n.id) === i);
  const around = others.map((n, i): LaidNode => {
    // Start at the top and go clockwise.
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, others.length);
    return { id: n.id, name: n.name, type: n.type, x: round(cx + radius * Math.cos(angle)), y: round(cy + radius * Math.sin(angle)), centre: false };
  });
  const byId = new Map([centre, ...around].map((n) => [n.id, n]));
  const edges: LaidEdge[] = [];
  for (const r of relations) {
    const from = byId.get(r.subjectId);
    const to = byId.get(r.objectId);
    // A relation to an entity the answer did not include cannot be drawn (it is still listed).
    if (!from || !to || from === to) continue;
    edges.push({
      id: r.id,
      from,
      to,
      predicate: r.predicate,
      superseded: r.supersededBy !== null || r.validTo !== null,
      labelX: round((from.x + to.x) / 2),
      labelY: round((from.y + to.y) / 2),
    });
  }
  return { width: size, height: size, nodes: [centre, ...around], edges };
}

/** A relation as a sentence: "Acme Corp acquired Globex". */
export function relationText(relation: Relation, names: Map<string, string>): string {
  const name = (id: string) => names.get(id) ?? id;
  return `${name(relation.subjectId)} ${relation.predicate.replace(/_/g, " ")} ${name(relation.objectId)}`;
}
