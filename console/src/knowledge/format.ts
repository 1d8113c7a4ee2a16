// How the knowledge page writes scores, citations and document states.
import type { Citation, KnowledgeDocument, Passage } from "./types";

/** A score short enough to read: 0 as "0", large BM25 sums with 2 decimals, small ones with 3
 * significant digits (a fused RRF score is about 0.03, a cosine similarity up to 1). */
export function formatScore(value: number): string {
  if (!Number.isFinite(value)) return "—";
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 100) return value.toFixed(1);
  if (size >= 1) return value.toFixed(2);
  return value.toPrecision(3);
}

export interface ScorePart {
  name: "vector" | "keyword" | "graph";
  /** The part's score, formatted. */
  value: string;
  /** "#2" when the part's ranking held the passage; "not found" when it did not. */
  rank: string;
  found: boolean;
}

/** The parts of a passage's score, in a fixed order: vector, keyword, graph. */
export function scoreParts(passage: Passage): ScorePart[] {
  const s = passage.scores;
  const part = (name: ScorePart["name"], value: number, rank: number | null): ScorePart => ({
    name,
    value: formatScore(value),
    rank: rank ? `#${rank}` : "not found",
    found: rank !== null && rank > 0,
  });
  return [part("vector", s.vector, s.vectorRank), part("keyword", s.keyword, s.keywordRank), part("graph", s.graph, s.graphRank)];
}

/** Where a passage comes from: "Title, page 3, Policies › Travel" (parts left out when absent;
 * a heading path that starts with the title, as a Markdown file's first heading often is, does
 * not repeat it). */
export function citationText(title: string, citation: Citation): string {
  const name = title.trim();
  const parts = [name || "Untitled"];
  if (citation.page) parts.push(`page ${citation.page}`);
  const headings = citation.headingPath[0]?.trim() === name ? citation.headingPath.slice(1) : citation.headingPath;
  if (headings.length) parts.push(headings.join(" › "));
  return parts.join(", ");
}

const SETTLED = new Set(["indexed", "failed"]);

/** A document whose state will not change by itself any more. */
export function isSettled(document: Pick<KnowledgeDocument, "state">): boolean {
  return SETTLED.has(document.state);
}

/** Documents still on their way (queued, parsing, embedding): the list is read again while any is. */
export function anyUnsettled(documents: Pick<KnowledgeDocument, "state">[]): boolean {
  return documents.some((d) => !isSettled(d));
}

/** A document's state as a reader sees it: a failure with its code and reason. */
export function stateText(document: Pick<KnowledgeDocument, "state" | "failure">): string {
  if (document.state === "failed" && document.failure) {
    return `failed (${document.failure.code}): ${document.failure.message}`;
  }
  return document.state;
}

/** Bytes as a person reads them: "512 B", "1.5 KB", "12.0 MB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
