// A persona's knowledge collections (docs/api.md: `knowledgeCollections`, ids, at most 20, each
// once; PATCH replaces the list): what the Personas page sends when one is attached or detached,
// and how it names them.
import type { Collection } from "../knowledge/types";

export const KNOWLEDGE_COLLECTIONS_MAX = 20;

export type Change = { ok: true; ids: string[] } | { ok: false; error: string };

/** The list with `id` added at its end; refused when already there or when the list is full. */
export function attach(ids: readonly string[], id: string): Change {
  if (!id) return { ok: false, error: "choose a collection to attach" };
  if (ids.includes(id)) return { ok: false, error: "that collection is attached already" };
  if (ids.length >= KNOWLEDGE_COLLECTIONS_MAX) {
    return { ok: false, error: `a persona answers from at most ${KNOWLEDGE_COLLECTIONS_MAX} collections: detach one first` };
  }
  return { ok: true, ids: [...ids, id] };
}

/** The list without `id` (the others in their order). */
export function detach(ids: readonly string[], id: string): string[] {
  return ids.filter((c) => c !== id);
}

export interface Attached {
  id: string;
  /** The collection's name; null when the tenant's list does not hold it (deleted, or not read yet). */
  name: string | null;
}

/** The attached ids with their collections' names, in the persona's order. */
export function attachedOf(ids: readonly string[], collections: readonly Collection[]): Attached[] {
  const byId = new Map(collections.map((c) => [c.id, c.name]));
  return ids.map((id) => ({ id, name: byId.get(id) ?? null }));
}

/** The tenant's collections not attached yet, by name: what the picker offers. */
export function attachable(ids: readonly string[], collections: readonly Collection[]): Collection[] {
  const taken = new Set(ids);
  return collections.filter((c) => !taken.has(c.id)).sort((a, b) => a.name.localeCompare(b.name));
}

/** A collection as a person reads it: its name, or its id when the name is unknown. */
export function labelOf(a: Attached): string {
  return a.name ?? `unknown collection ${a.id}`;
}
