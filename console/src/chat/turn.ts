// One turn of a conversation as the console shows it, built from the turn's events (SSE from
// POST .../messages, or from GET .../messages/{id}/events when a stream is resumed).

import { ApiClient, ApiError, problemOf, type Problem } from "../api/client";
import { readSse, type SseEvent } from "../api/sse";
import type { TurnCompleted } from "../api/types";

export type Phase = "sending" | "accepted" | "queued" | "typing" | "completed" | "failed";

/** A tool call the persona's model made in the turn, and its result once it ran. */
export interface ToolCall {
  callId: string;
  tool: string;
  arguments: Record<string, unknown>;
  impact: string;
  status: string;
  reason: string;
  result?: { content: string; isError: boolean; durationMs: number };
}

export interface TurnState {
  messageId: string | null;
  toolCalls: ToolCall[];
  phase: Phase;
  ahead: number;
  text: string;
  /** `id:` of the last event applied: a resumed stream continues after it. */
  lastEventId: string | null;
  completed: TurnCompleted | null;
  problem: Problem | null;
}

export const initialTurn: TurnState = {
  messageId: null,
  toolCalls: [],
  phase: "sending",
  ahead: 0,
  text: "",
  lastEventId: null,
  completed: null,
  problem: null,
};

/** Stream ids are Redis ids, `<ms>-<seq>`: compare them as pairs of numbers. */
export function afterId(id: string, last: string | null): boolean {
  if (last === null) return true;
  const [a1, a2] = id.split("-").map(Number);
  const [b1, b2] = last.split("-").map(Number);
  return a1 > b1 || (a1 === b1 && a2 > b2);
}

/** Apply one event. An event at or before `lastEventId` was applied already (a resumed stream
 * may overlap the broken one) and changes nothing: no text is repeated. */
export function applyEvent(state: TurnState, event: SseEvent): TurnState {
  if (event.id !== null && !afterId(event.id, state.lastEventId)) return state;
  const data = event.data ? JSON.parse(event.data) : {};
  const next = { ...state, lastEventId: event.id ?? state.lastEventId };
  switch (event.event) {
    case "accepted":
      return { ...next, messageId: data.messageId, phase: "accepted" };
    case "queued":
      return { ...next, phase: "queued", ahead: data.ahead ?? 0 };
    case "started":
      return { ...next, phase: "typing" };
    case "tool_call":
      return { ...next, toolCalls: [...next.toolCalls, { ...(data as ToolCall) }] };
    case "tool_result":
      return {
        ...next,
        toolCalls: next.toolCalls.map((c) =>
          c.callId === data.callId ? { ...c, result: { content: data.content, isError: data.isError, durationMs: data.durationMs } } : c,
        ),
      };
    case "delta":
      return { ...next, phase: "typing", text: next.text + (data.text ?? "") };
    case "completed":
      return { ...next, phase: "completed", completed: data as TurnCompleted, text: data.reply?.text ?? next.text };
    case "error":
      return { ...next, phase: "failed", problem: data as Problem };
    default:
      return next;
  }
}

export function isFinal(state: TurnState): boolean {
  return state.phase === "completed" || state.phase === "failed";
}

/** Where a turn is remembered across a reload of the page (this tab only). */
export function pendingKey(personaId: string, conversationId: string): string {
  return `edrs.console.turn.${personaId}.${conversationId}`;
}

export function rememberPending(personaId: string, conversationId: string, messageId: string): void {
  sessionStorage.setItem(pendingKey(personaId, conversationId), messageId);
}

export function forgetPending(personaId: string, conversationId: string): void {
  sessionStorage.removeItem(pendingKey(personaId, conversationId));
}

export function pendingOf(personaId: string, conversationId: string): string | null {
  return sessionStorage.getItem(pendingKey(personaId, conversationId));
}

const base = (personaId: string, conversationId: string) =>
  `/api/v1/personas/${encodeURIComponent(personaId)}/conversations/${encodeURIComponent(conversationId)}/messages`;

const RESUME_ATTEMPTS = 5;

/**
 * Run a turn to its end, calling `onState` after every event. `text` sends a new message;
 * `resume` picks up a turn already sent (after a reload) from its first event. A stream that
 * breaks before the turn ends is resumed after the last event received.
 */
export async function runTurn(
  api: ApiClient,
  personaId: string,
  conversationId: string,
  how: { text: string } | { resume: string },
  onState: (state: TurnState) => void,
): Promise<TurnState> {
  let state: TurnState = initialTurn;
  const onEvent = (event: SseEvent) => {
    state = applyEvent(state, event);
    if (event.event === "accepted" && state.messageId) rememberPending(personaId, conversationId, state.messageId);
    onState(state);
  };
  let messageId = "resume" in how ? how.resume : null;
  if ("text" in how) {
    const response = await api.fetch(base(personaId, conversationId), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ text: how.text }),
    });
    if (!response.ok) throw new ApiError(await problemOf(response));
    await readSse(response, onEvent).catch(() => undefined);
    messageId = state.messageId;
  }
  for (let attempt = 0; !isFinal(state) && messageId && attempt < RESUME_ATTEMPTS; attempt++) {
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
    const response = await api.fetch(`${base(personaId, conversationId)}/${messageId}/events`, { headers });
    if (response.status === 404) {
      forgetPending(personaId, conversationId); // too old to resume: the history holds the reply
      break;
    }
    if (!response.ok) throw new ApiError(await problemOf(response));
    await readSse(response, onEvent).catch(() => undefined);
  }
  if (isFinal(state) || state.messageId === null) forgetPending(personaId, conversationId);
  return state;
}
