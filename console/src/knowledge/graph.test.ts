import { describe, expect, it } from "vitest";
import { radialLayout, relationText } from "./graph";
import type { Entity, Relation } from "./types";

const entity = (id: string, name: string): Entity => ({
  id, name, type: "organization", aliases: [], collectionIds: [], mentionCount: 1, createdAt: "2025-01-01T00:00:00Z",
});
const relation = (id: string, subjectId: string, predicate: string, objectId: string, supersededBy: string | null = null): Relation => ({
  id, subjectId, predicate, objectId, validFrom: null, validTo: null, supersededBy, supersedeReason: null, sources: [], createdAt: "2025-01-01T00:00:00Z",
});

describe("radialLayout", () => {
  const acme = entity("e1", "Acme");
  const neighbours = [entity("e2", "Globex"), entity("e3", "Initech"), entity("e4", "Hooli"), entity("e2", "Globex")];
  const relations = [
    relation("r1", "e1", "acquired", "e2"),
    relation("r2", "e3", "supplies", "e1"),
    relation("r3", "e1", "competes_with", "e4", "r9"),
    relation("r4", "e1", "owns", "e404"),
  ];
  const layout = radialLayout(acme, neighbours, relations, 400);

  it("puts the entity in the middle and each neighbour once on a circle around it", () => {
    const [centre, ...around] = layout.nodes;
    expect(centre).toMatchObject({ id: "e1", x: 200, y: 200, centre: true });
    expect(around.map((n) => n.id)).toEqual(["e2", "e3", "e4"]);
    const distances = around.map((n) => Math.hypot(n.x - 200, n.y - 200));
    for (const d of distances) expect(d).toBeCloseTo(130, 0);
    // The first neighbour is straight above.
    expect(around[0]).toMatchObject({ x: 200, y: 70 });
  });

  it("draws one edge per relation between drawn entities, in its direction, superseded ones marked", () => {
    expect(layout.edges.map((e) => [e.from.id, e.predicate, e.to.id, e.superseded])).toEqual([
      ["e1", "acquired", "e2", false],
      ["e3", "supplies", "e1", false],
      ["e1", "competes_with", "e4", true],
    ]);
    const first = layout.edges[0];
    expect(first.labelX).toBeCloseTo((first.from.x + first.to.x) / 2, 1);
    expect(first.labelY).toBeCloseTo((first.from.y + first.to.y) / 2, 1);
  });

  it("draws a lone entity alone", () => {
    expect(radialLayout(acme, [], []).nodes).toHaveLength(1);
  });
});

describe("relationText", () => {
  it("reads a relation as a sentence, falling back to ids for unknown entities", () => {
    const names = new Map([["e1", "Acme"], ["e2", "Globex"]]);
    expect(relationText(relation("r", "e1", "ceo_of", "e2"), names)).toBe("Acme ceo of Globex");
    expect(relationText(relation("r", "e1", "owns", "e9"), names)).toBe("Acme owns e9");
  });
});
