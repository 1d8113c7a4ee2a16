// The knowledge API's JSON (docs/api.md#knowledge), as the console reads it.

export interface Collection {
  id: string;
  name: string;
  description: string;
  documentCount: number;
  chunkCount: number;
  createdAt: string;
}

export type DocumentState = "queued" | "parsing" | "embedding" | "indexed" | "failed";

export interface KnowledgeDocument {
  id: string;
  collectionId: string;
  externalId: string | null;
  title: string;
  source: string;
  metadata: Record<string, string>;
  state: DocumentState;
  failure: { code: string; message: string } | null;
  version: number;
  format: string;
  sizeBytes: number;
  pageCount: number;
  chunkCount: number;
  textLength: number;
  contentHash: string;
  createdAt: string;
  updatedAt: string;
}

export interface IngestOut {
  outcome: "created" | "updated" | "unchanged";
  document: KnowledgeDocument;
}

export interface Citation {
  page: number | null;
  headingPath: string[];
  startOffset: number;
  endOffset: number;
  contentHash: string;
  documentVersion: number;
  chunkIndex: number;
}

export interface Scores {
  vector: number;
  keyword: number;
  graph: number;
  vectorRank: number | null;
  keywordRank: number | null;
  graphRank: number | null;
}

export interface Passage {
  chunkId: string;
  documentId: string;
  externalId: string | null;
  collectionId: string;
  title: string;
  source: string;
  text: string;
  score: number;
  scores: Scores;
  citation: Citation;
  metadata: Record<string, string>;
}

export type SearchMode = "hybrid" | "vector" | "keyword";

export interface SearchOut {
  mode: SearchMode;
  passages: Passage[];
}

export interface Entity {
  id: string;
  name: string;
  type: string;
  aliases: string[];
  collectionIds: string[];
  mentionCount: number;
  createdAt: string;
}

export interface RelationSource {
  documentId: string;
  chunkId: string;
  title: string;
  text: string;
  citation: Citation;
}

export interface Relation {
  id: string;
  subjectId: string;
  predicate: string;
  objectId: string;
  validFrom: string | null;
  validTo: string | null;
  supersededBy: string | null;
  supersedeReason: string | null;
  sources: RelationSource[];
  createdAt: string;
}

export interface Neighbourhood {
  entity: Entity;
  relations: Relation[];
  neighbours: Entity[];
  nextPageToken: string;
}
