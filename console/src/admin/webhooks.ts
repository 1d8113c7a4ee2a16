// The webhooks API's JSON (docs/integration.md, "Webhooks out"), and what the Webhooks page
// computes from it: the event types a user typed, and a delivery's outcome in a few words.

export interface Webhook {
  id: string;
  url: string;
  eventTypes: string[];
  description: string;
  enabled: boolean;
  previousSecretExpiresAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/** POST /webhooks and .../rotate-secret: the secret is in this answer and in no other. */
export interface WebhookWithSecret {
  webhook: Webhook;
  secret: string;
}

export interface Attempt {
  number: number;
  attemptedAt: string;
  /** 0 when no answer came. */
  statusCode: number;
  error: string;
  latencyMs: number;
}

export type DeliveryState = "pending" | "succeeded" | "dead";

export interface Delivery {
  id: string;
  eventId: string;
  eventType: string;
  state: DeliveryState;
  attempts: Attempt[];
  nextAttemptAt: string | null;
  createdAt: string;
}

// As the gateway checks them (CreateWebhook.event_types).
const EVENT_TYPE = /^[a-z0-9_.*>]+$/;
export const EVENT_TYPES_MAX = 50;
const EVENT_TYPE_MAX_LENGTH = 200;

export type Parsed = { ok: true; types: string[] } | { ok: false; error: string };

/** The event types typed in one field, separated by commas, spaces or new lines: each checked as
 * the API checks it (so the user hears of a bad one before sending), repeats kept once. */
export function parseEventTypes(text: string): Parsed {
  const types: string[] = [];
  for (const raw of text.split(/[\s,]+/)) {
    if (!raw) continue;
    if (raw.length > EVENT_TYPE_MAX_LENGTH) {
      return { ok: false, error: `event type ${raw.slice(0, 40)}… is longer than ${EVENT_TYPE_MAX_LENGTH} characters` };
    }
    if (!EVENT_TYPE.test(raw)) {
      return { ok: false, error: `event type ${raw} may hold only a-z, 0-9, _, ., * and >` };
    }
    if (!types.includes(raw)) types.push(raw);
  }
  if (types.length === 0) return { ok: false, error: "give at least one event type (task.task_created, task.* or *)" };
  if (types.length > EVENT_TYPES_MAX) return { ok: false, error: `at most ${EVENT_TYPES_MAX} event types, not ${types.length}` };
  return { ok: true, types };
}

/** The last attempt of a delivery (attempts come in any order), or null before the first. */
export function lastAttempt(d: Delivery): Attempt | null {
  return d.attempts.reduce<Attempt | null>((last, a) => (last === null || a.number > last.number ? a : last), null);
}

/** What a receiver answered to one attempt: its status code, or why no answer came. */
export function answerOf(a: Attempt): string {
  if (a.statusCode === 0) return a.error ? `no answer: ${a.error}` : "no answer";
  return a.error ? `HTTP ${a.statusCode}: ${a.error}` : `HTTP ${a.statusCode}`;
}

/** Whether a delivery of the log waits for an attempt: the page re-reads the log more often. */
export function deliveriesLive(deliveries: Delivery[]): boolean {
  return deliveries.some((d) => d.state === "pending");
}
