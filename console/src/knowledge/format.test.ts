import { describe, expect, it } from "vitest";
import { anyUnsettled, citationText, formatBytes, formatScore, scoreParts, stateText } from "./format";
import type { Passage } from "./types";

function passage(scores: Partial<Passage["scores"]>): Passage {
  return {
    chunkId: "c1",
    documentId: "d1",
    externalId: null,
    collectionId: "k1",
    title: "VPN",
    source: "",
    text: "The server is vpn.acme.example.",
    score: 0.0325,
    scores: { vector: 0, keyword: 0, graph: 0, vectorRank: null, keywordRank: null, graphRank: null, ...scores },
    citation: { page: null, headingPath: [], startOffset: 0, endOffset: 31, contentHash: "h", documentVersion: 1, chunkIndex: 0 },
    metadata: {},
  };
}

describe("formatScore", () => {
  it("writes each kind of score readably", () => {
    expect(formatScore(0)).toBe("0");
    expect(formatScore(0.0327868)).toBe("0.0328"); // a fused score: first in both rankings
    expect(formatScore(0.71)).toBe("0.710"); // a cosine similarity
    expect(formatScore(-0.0421)).toBe("-0.0421");
    expect(formatScore(7.4219)).toBe("7.42"); // a BM25 sum
    expect(formatScore(123.456)).toBe("123.5");
    expect(formatScore(Number.NaN)).toBe("—");
  });
});

describe("scoreParts", () => {
  it("lists vector, keyword and graph with their ranks, and says which ranking missed it", () => {
    const parts = scoreParts(passage({ vector: 0.71, vectorRank: 1, keyword: 7.42, keywordRank: 2 }));
    expect(parts).toEqual([
      { name: "vector", value: "0.710", rank: "#1", found: true },
      { name: "keyword", value: "7.42", rank: "#2", found: true },
      { name: "graph", value: "0", rank: "not found", found: false },
    ]);
    const vectorOnly = scoreParts(passage({ vector: 0.5, vectorRank: 3 }));
    expect(vectorOnly[1]).toEqual({ name: "keyword", value: "0", rank: "not found", found: false });
  });
});

describe("citationText", () => {
  it("names the title, the page of a PDF and the heading path", () => {
    const c = passage({}).citation;
    expect(citationText("Travel policy", { ...c, page: 3, headingPath: ["Policies", "Travel"] })).toBe(
      "Travel policy, page 3, Policies › Travel",
    );
    expect(citationText("FAQ", c)).toBe("FAQ");
    expect(citationText("  ", { ...c, headingPath: ["VPN"] })).toBe("Untitled, VPN");
    // A document titled by its first heading: the title is not said twice.
    expect(citationText("Lighthouse keeping", { ...c, headingPath: ["Lighthouse keeping", "Lamp care"] })).toBe(
      "Lighthouse keeping, Lamp care",
    );
    expect(citationText("Lighthouse keeping", { ...c, headingPath: ["Lighthouse keeping"] })).toBe("Lighthouse keeping");
  });
});

describe("document states", () => {
  it("refreshes while a document is queued, parsing or embedding, and stops when all settled", () => {
    expect(anyUnsettled([{ state: "indexed" }, { state: "queued" }])).toBe(true);
    expect(anyUnsettled([{ state: "parsing" }])).toBe(true);
    expect(anyUnsettled([{ state: "embedding" }])).toBe(true);
    expect(anyUnsettled([{ state: "indexed" }, { state: "failed" }])).toBe(false);
    expect(anyUnsettled([])).toBe(false);
  });

  it("says why a document failed", () => {
    expect(stateText({ state: "failed", failure: { code: "encrypted", message: "the PDF is encrypted" } })).toBe(
      "failed (encrypted): the PDF is encrypted",
    );
    expect(stateText({ state: "indexed", failure: null })).toBe("indexed");
  });
});

describe("formatBytes", () => {
  it("uses the largest unit that keeps the number at or above 1", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KB");
    expect(formatBytes(12 * 1024 * 1024)).toBe("12.0 MB");
  });
});
