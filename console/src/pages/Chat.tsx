import { useVirtualizer } from "@tanstack/react-virtual";
import { FormEvent, KeyboardEvent, useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useApi } from "../api/context";
import { messageOf, usePaged, usePersonas } from "../api/hooks";
import type { Conversation, Message } from "../api/types";
import { forgetPending, initialTurn, pendingOf, runTurn, type ToolCall, type TurnState } from "../chat/turn";
import { LoadMore } from "../components/LoadMore";
import { Markdown } from "../components/Markdown";
import { PersonaPicker } from "../components/PersonaPicker";

// Pages of history fetched one after another: the first renders at once, the rest append.
const HISTORY_PAGE = 200;

interface Row {
  key: string;
  role: "user" | "assistant";
  text: string;
  streaming?: TurnState;
  toolCalls?: ToolCall[];
}

function ToolCalls({ calls }: { calls: ToolCall[] }) {
  if (calls.length === 0) return null;
  return (
    <ul className="tool-calls" aria-label="Tool calls">
      {calls.map((c) => (
        <li key={c.callId} data-testid="tool-call">
          <details>
            <summary>
              <code>{c.tool}</code> ({c.impact}): {c.result ? (c.result.isError ? "failed" : `done in ${Math.round(c.result.durationMs)} ms`) : c.status}
              {c.reason && ` — ${c.reason}`}
            </summary>
            <pre>{JSON.stringify(c.arguments, null, 2)}</pre>
            {c.result && <pre>{c.result.content}</pre>}
          </details>
        </li>
      ))}
    </ul>
  );
}

export function ChatPage() {
  const { personaId, conversationId } = useParams();
  const navigate = useNavigate();
  const personas = usePersonas();
  const conversations = usePaged<Conversation>(
    personaId ? `/api/v1/personas/${personaId}/conversations?pageSize=50` : null,
    "conversations",
  );
  const persona = personas.data?.personas.find((p) => p.id === personaId);

  function newConversation() {
    const id = `c-${Date.now().toString(36)}`;
    navigate(`/chat/${personaId}/${id}`);
  }

  return (
    <div className="chat">
      <section className="chat-side" aria-label="Conversations">
        <h1>Chat</h1>
        {personas.error && <p role="alert" className="error">{personas.error}</p>}
        <PersonaPicker
          personas={personas.data?.personas ?? []}
          value={personaId}
          onChange={(id) => navigate(`/chat/${id}`)}
        />
        {personaId && (
          <>
            <button type="button" onClick={newConversation}>
              New conversation
            </button>
            <h2>Conversations</h2>
            <ul className="conversations">
              {conversations.items.map((c) => (
                <li key={c.id}>
                  <Link to={`/chat/${personaId}/${c.id}`} aria-current={c.id === conversationId ? "page" : undefined}>
                    {c.id} <span className="muted">({c.messageCount})</span>
                  </Link>
                </li>
              ))}
            </ul>
            {conversations.error && <p role="alert" className="error">{conversations.error}</p>}
            <LoadMore list={conversations} what="conversations" />
          </>
        )}
      </section>
      {personaId && conversationId ? (
        <ConversationView
          key={`${personaId}/${conversationId}`}
          personaId={personaId}
          conversationId={conversationId}
          personaName={persona?.name ?? "The persona"}
          onTurnDone={conversations.reload}
        />
      ) : (
        <section className="chat-main">
          <p>{personaId ? "Start a new conversation or open one." : "Choose a persona to talk to."}</p>
        </section>
      )}
    </div>
  );
}

function ConversationView({
  personaId,
  conversationId,
  personaName,
  onTurnDone,
}: {
  personaId: string;
  conversationId: string;
  personaName: string;
  onTurnDone: () => void;
}) {
  const api = useApi();
  const [history, setHistory] = useState<Message[]>([]);
  const [historyDone, setHistoryDone] = useState(false);
  const [live, setLive] = useState<{ userText: string | null; state: TurnState } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  const [announce, setAnnounce] = useState("");
  // Tool calls of the replies streamed in this view, by reply id (the history does not hold them).
  const [toolCalls, setToolCalls] = useState<Record<string, ToolCall[]>>({});
  const scroller = useRef<HTMLDivElement>(null);
  const stickToBottom = useRef(true);
  const base = `/api/v1/personas/${personaId}/conversations/${encodeURIComponent(conversationId)}/messages`;

  const finish = useCallback(
    (state: TurnState, userText: string | null) => {
      setLive(null);
      if (state.phase === "failed") {
        setError(state.problem?.detail ?? state.problem?.title ?? "the reply failed");
        return;
      }
      const done = state.completed;
      if (!done) return;
      if (state.toolCalls.length > 0) setToolCalls((t) => ({ ...t, [done.reply.messageId]: state.toolCalls }));
      setHistory((h) => {
        const have = new Set(h.map((m) => m.id));
        const add: Message[] = [];
        const now = new Date().toISOString();
        if (userText !== null && !have.has(done.messageId))
          add.push({ id: done.messageId, conversationId, role: "user", text: userText, traceId: null, createdAt: now });
        if (!have.has(done.reply.messageId))
          add.push({ id: done.reply.messageId, conversationId, role: "assistant", text: done.reply.text, traceId: done.reply.traceId, createdAt: now });
        return [...h, ...add];
      });
      setAnnounce(`${personaName} replied.`);
      onTurnDone();
    },
    [conversationId, personaName, onTurnDone],
  );

  // History, page after page; then a turn this tab left running (a reload mid-reply) resumes.
  useEffect(() => {
    let live = true;
    (async () => {
      const all: Message[] = [];
      let token = "";
      do {
        const page = await api.json<{ messages: Message[]; nextPageToken: string }>(
          "GET",
          `${base}?pageSize=${HISTORY_PAGE}${token ? `&pageToken=${encodeURIComponent(token)}` : ""}`,
        );
        if (!live) return;
        all.push(...page.messages);
        setHistory([...all]);
        token = page.nextPageToken;
      } while (token);
      setHistoryDone(true);
      const pending = pendingOf(personaId, conversationId);
      if (!pending) return;
      const sent = all.findIndex((m) => m.id === pending);
      if (sent >= 0 && all.slice(sent + 1).some((m) => m.role === "assistant")) {
        forgetPending(personaId, conversationId); // it ended while the page was away
        return;
      }
      const state = await runTurn(api, personaId, conversationId, { resume: pending }, (s) => live && setLive({ userText: null, state: s }));
      if (live) finish(state, null);
    })().catch((e) => live && setError(messageOf(e)));
    return () => {
      live = false;
    };
  }, [api, base, personaId, conversationId, finish]);

  async function send(event?: FormEvent) {
    event?.preventDefault();
    const text = draft.trim();
    if (!text || live) return;
    setDraft("");
    setError(null);
    stickToBottom.current = true;
    setLive({ userText: text, state: { ...initialTurn } });
    try {
      const state = await runTurn(api, personaId, conversationId, { text }, (s) => setLive({ userText: text, state: s }));
      finish(state, text);
    } catch (e) {
      setLive(null);
      setDraft(text);
      setError(messageOf(e));
    }
  }

  function onKey(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      void send();
    }
  }

  const rows: Row[] = history.map((m) => ({ key: m.id, role: m.role, text: m.text, toolCalls: toolCalls[m.id] }));
  if (live) {
    if (live.userText !== null) rows.push({ key: "live-user", role: "user", text: live.userText });
    rows.push({ key: "live-reply", role: "assistant", text: live.state.text, streaming: live.state, toolCalls: live.state.toolCalls });
  }

  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => 72,
    overscan: 10,
    getItemKey: (i) => rows[i].key,
  });

  // Follow the conversation's end while the reader is there; leave them where they scrolled.
  useLayoutEffect(() => {
    if (stickToBottom.current && rows.length > 0) virtualizer.scrollToIndex(rows.length - 1, { align: "end" });
  }, [rows.length, live?.state.text, virtualizer]);

  const phase = live?.state.phase;
  const status =
    phase === "queued"
      ? `Queued: ${live!.state.ahead} ahead`
      : phase === "typing"
        ? `${personaName} is typing…`
        : phase === "sending" || phase === "accepted"
          ? "Sending…"
          : "";

  return (
    <section className="chat-main" aria-label={`Conversation ${conversationId}`}>
      <h2>{conversationId}</h2>
      <div
        ref={scroller}
        className="messages"
        role="log"
        aria-label="Messages"
        aria-busy={!historyDone}
        tabIndex={0}
        onScroll={(e) => {
          const el = e.currentTarget;
          stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((item) => {
            const row = rows[item.index];
            return (
              <div
                key={item.key}
                data-index={item.index}
                ref={virtualizer.measureElement}
                className={`message ${row.role}${row.streaming ? " streaming" : ""}`}
                data-testid={row.streaming ? "streaming-reply" : "message"}
                data-role={row.role}
                style={{ position: "absolute", top: 0, left: 0, width: "100%", transform: `translateY(${item.start}px)` }}
              >
                <span className="who">{row.role === "user" ? "You" : personaName}</span>
                {row.toolCalls && <ToolCalls calls={row.toolCalls} />}
                {row.role === "assistant" ? <Markdown text={row.text} /> : <p className="plain">{row.text}</p>}
              </div>
            );
          })}
        </div>
      </div>
      <p className="status" role="status" aria-live="polite" data-testid="turn-status">
        {status}
        {phase === "typing" && <span className="typing" aria-hidden="true"> ●●●</span>}
      </p>
      <p className="visually-hidden" aria-live="polite">{announce}</p>
      {error && <p role="alert" className="error">{error}</p>}
      <form className="composer" onSubmit={send}>
        <label htmlFor="message">Message</label>
        <textarea
          id="message"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          onKeyDown={onKey}
          rows={3}
          placeholder="Write a message (Enter sends, Shift+Enter for a new line)"
        />
        <button type="submit" disabled={!draft.trim() || live !== null}>
          Send
        </button>
      </form>
    </section>
  );
}
