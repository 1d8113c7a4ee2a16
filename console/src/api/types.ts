// The shapes of the API's JSON (camelCase), as the console reads them; see /api/openapi.json.

export interface Persona {
  id: string;
  name: string;
  role: string;
  responsibilities: string[];
  skills: string[];
  tone: string;
  instructions: string;
  /** Ids of the knowledge collections every turn searches. */
  knowledgeCollections: string[];
  status: "active" | "archived";
  createdAt: string;
  updatedAt: string;
}

export interface Conversation {
  id: string;
  personaId: string;
  messageCount: number;
  createdAt: string;
  updatedAt: string;
}

export interface Message {
  id: string;
  conversationId: string;
  role: "user" | "assistant";
  text: string;
  traceId: string | null;
  createdAt: string;
}

export interface Fact {
  id: string;
  attribute: string;
  value: string;
  statement: string;
  source: string;
  validFrom: string;
  validTo: string | null;
  supersededBy: string | null;
  status: "current" | "superseded";
}

export interface TurnCompleted {
  messageId: string;
  reply: { messageId: string; text: string; traceId: string };
  learned: Fact[];
}

export interface Relationship {
  personaId: string;
  userId: string;
  preferences: string[];
  likes: string[];
  dislikes: string[];
  notes: string[];
  facts: Fact[];
  interactionCount: number;
  firstInteractionAt: string | null;
  lastInteractionAt: string | null;
  recentConversations: Conversation[];
}

export interface ScoredMemory {
  memory: { id: string; conversationId: string; text: string; kind: string; role: string; importance: number; createdAt: string };
  score: number;
  recency: number;
  importance: number;
  relevance: number;
}

export interface Coworker {
  personaId: string;
  coworkerId: string;
  coworkerName: string;
  coworkerRole: string;
  relation: string;
  handover: string;
  createdAt: string;
}

export interface User {
  id: string;
  email: string;
  displayName: string;
  role: string;
  lockedUntil: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  role: string;
  scopes: string[];
  expiresAt: string | null;
  lastUsedAt: string | null;
  createdAt: string;
  apiKey?: string;
}

export interface AuditEvent {
  id: string;
  actor: string;
  action: string;
  outcome: string;
  target: string;
  details: Record<string, unknown>;
  ip: string | null;
  createdAt: string;
}

/** A page of a list route: the items under their plural name, and the next page's token. */
export type Page<K extends string, T> = { [key in K]: T[] } & { nextPageToken: string };
