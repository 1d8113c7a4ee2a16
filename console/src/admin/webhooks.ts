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

/** A webhook as its edit form holds it: the event types as typed. */
export interface WebhookDraft {
  url: string;
  eventTypes: string;
  description: string;
  enabled: boolean;
}

export function draftOf(w: Webhook): WebhookDraft {
  return { url: w.url, eventTypes: w.eventTypes.join(", "), description: w.description, enabled: w.enabled };
}

/** The body of `PATCH /webhooks/{id}`: only the fields that change. */
export interface WebhookChanges {
  url?: string;
  eventTypes?: string[];
  description?: string;
  enabled?: boolean;
}

export type Edited = { ok: true; changes: WebhookChanges } | { ok: false; error: string };

const DESCRIPTION_MAX_LENGTH = 500;
const URL_MAX_LENGTH = 2000;

/** What an edit changes, checked as the API checks it; an edit that changes nothing is refused
 * here (the API refuses an empty update too). The same event types in another order or repeated
 * are no change. */
export function webhookChanges(w: Webhook, draft: WebhookDraft): Edited {
  const changes: WebhookChanges = {};
  const url = draft.url.trim();
  if (!url) return { ok: false, error: "give the receiver's URL" };
  if (url.length > URL_MAX_LENGTH) return { ok: false, error: `the URL is longer than ${URL_MAX_LENGTH} characters` };
  if (url !== w.url) changes.url = url;
  const parsed = parseEventTypes(draft.eventTypes);
  if (!parsed.ok) return parsed;
  const same = parsed.types.length === w.eventTypes.length && parsed.types.every((t) => w.eventTypes.includes(t));
  if (!same) changes.eventTypes = parsed.types;
  const description = draft.description.trim();
  if (description.length > DESCRIPTION_MAX_LENGTH) {
    return { ok: false, error: `the description is longer than ${DESCRIPTION_MAX_LENGTH} characters` };
  }
  if (/[\x00-\x1f\x7f-\x9f]/.test(description)) return { ok: false, error: "the description is one line, with no control characters" };
  if (description !== w.description) changes.description = description;
  if (draft.enabled !== w.enabled) changes.enabled = draft.enabled;
  if (Object.keys(changes).length === 0) return { ok: false, error: "nothing changed: edit a field first" };
  return { ok: true, changes };
}

/** Whether the previous secret of a rotated webhook still verifies at `now`. */
export function previousSecretLive(w: Webhook, now: number = Date.now()): boolean {
  return w.previousSecretExpiresAt !== null && Date.parse(w.previousSecretExpiresAt) > now;
}
