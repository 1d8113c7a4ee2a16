import { DragEvent, FormEvent, useEffect, useReducer, useRef, useState } from "react";
import { useNavigate, useParams } from "react-router-dom";
import { useApi } from "../api/context";
import { messageOf, useGet, usePaged } from "../api/hooks";
import { When } from "../components/Dates";
import { EntityGraph } from "../components/EntityGraph";
import { LoadMore } from "../components/LoadMore";
import { anyUnsettled, citationText, formatBytes, formatScore, scoreParts, stateText } from "../knowledge/format";
import type { Collection, IngestOut, KnowledgeDocument, Passage, SearchMode, SearchOut } from "../knowledge/types";
import { cancellable, percentSent, toStart, uploadStatus, uploadsReducer } from "../knowledge/uploads";

// Documents on their way (queued, parsing, embedding) are read again this often.
const DOCUMENTS_REFRESH_MS = 2000;
// Documents read at a time ("Load more" reads the next ones).
const DOCUMENTS_PAGE = 100;
const NAME = /^[a-z0-9_-]{1,63}$/;

export function KnowledgePage() {
  const { collection } = useParams();
  const navigate = useNavigate();
  const api = useApi();
  const collections = useGet<{ collections: Collection[] }>("/api/v1/knowledge/collections?pageSize=200");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<string | null>(null);
  const all = collections.data?.collections ?? [];
  const selected = all.find((c) => c.id === collection || c.name === collection) ?? null;

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(null);
    const wanted = name.trim();
    if (!NAME.test(wanted)) {
      setError("A collection's name is 1 to 63 characters of a-z, 0-9, - and _.");
      return;
    }
    try {
      const made = await api.json<Collection>("POST", "/api/v1/knowledge/collections", {
        name: wanted,
        description: description.trim(),
      });
      setName("");
      setDescription("");
      collections.reload();
      navigate(`/knowledge/${made.name}`);
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <div>
      <h1>Knowledge</h1>
      {(collections.error || error) && <p role="alert" className="error">{collections.error || error}</p>}
      <section aria-labelledby="collections-title">
        <h2 id="collections-title">Collections</h2>
        <table>
          <caption className="visually-hidden">Collections</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Documents</th>
              <th scope="col">Passages</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {all.map((c) => (
              <tr key={c.id} aria-selected={c.id === selected?.id} data-testid="collection-row">
                <td>
                  <button type="button" className="link" aria-current={c.id === selected?.id ? "true" : undefined} onClick={() => navigate(`/knowledge/${c.name}`)}>
                    {c.name}
                  </button>
                </td>
                <td>{c.description || "—"}</td>
                <td>{c.documentCount}</td>
                <td>{c.chunkCount}</td>
                <td><When at={c.createdAt} /></td>
              </tr>
            ))}
          </tbody>
        </table>
        {collections.data && all.length === 0 && <p className="muted">No collections yet: create one below.</p>}
        <form className="card" onSubmit={create} aria-label="Create a collection">
          <h3>Create a collection</h3>
          <label htmlFor="c-name">Collection name</label>
          <input id="c-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={63} aria-describedby="c-name-hint" />
          <span id="c-name-hint" className="muted">a-z, 0-9, - and _ (up to 63)</span>
          <label htmlFor="c-description">Collection description</label>
          <input id="c-description" value={description} onChange={(e) => setDescription(e.target.value)} />
          <button type="submit">Create collection</button>
        </form>
      </section>
      {selected && <CollectionView key={selected.id} collection={selected} onChange={collections.reload} />}
      <SearchPanel collections={all} />
      <EntityGraph collections={all} />
    </div>
  );
}

function CollectionView({ collection, onChange }: { collection: Collection; onChange: () => void }) {
  const api = useApi();
  const documents = usePaged<KnowledgeDocument>(
    `/api/v1/knowledge/documents?collection=${collection.id}&pageSize=${DOCUMENTS_PAGE}`,
    "documents",
  );
  const [confirming, setConfirming] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState("");
  const list = documents.items;
  const moving = anyUnsettled(list);
  const { reload } = documents;

  // Read again until every document is indexed or failed.
  useEffect(() => {
    if (!moving) return;
    const timer = setInterval(reload, DOCUMENTS_REFRESH_MS);
    return () => clearInterval(timer);
  }, [moving, reload]);

  // When the last document settles, the collection's counts have changed.
  const wasMoving = useRef(false);
  useEffect(() => {
    if (wasMoving.current && !moving) onChange();
    wasMoving.current = moving;
  }, [moving, onChange]);

  async function remove(document: KnowledgeDocument) {
    setError(null);
    setConfirming(null);
    try {
      const done = await api.json<{ chunksDeleted: number }>("DELETE", `/api/v1/knowledge/documents/${document.id}`);
      setNotice(`Deleted ${document.title || document.externalId || document.id} (${done.chunksDeleted} passages).`);
      reload();
      onChange();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <section className="card wide" aria-labelledby="collection-title">
      <h2 id="collection-title">Collection {collection.name}</h2>
      {collection.description && <p>{collection.description}</p>}
      <Uploader
        collection={collection}
        onUploaded={() => {
          reload();
          onChange();
        }}
      />
      <h3 id="documents-title">Documents</h3>
      {(documents.error || error) && <p role="alert" className="error">{documents.error || error}</p>}
      <p role="status" className="notice">{notice}</p>
      <p className="muted" data-testid="documents-refresh">
        {moving ? "Some documents are still being processed: this list refreshes every 2 seconds." : "Every document is indexed or failed."}
      </p>
      <table aria-labelledby="documents-title">
        <thead>
          <tr>
            <th scope="col">Title</th>
            <th scope="col">State</th>
            <th scope="col">Version</th>
            <th scope="col">Format</th>
            <th scope="col">Passages</th>
            <th scope="col">Size</th>
            <th scope="col">Updated</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {list.map((d) => {
            const label = d.title || d.externalId || d.id;
            return (
              <tr key={d.id} data-testid="document-row" data-state={d.state}>
                <td>
                  {label}
                  {d.externalId && d.externalId !== label && <div className="muted">{d.externalId}</div>}
                </td>
                <td className={d.state === "failed" ? "error" : undefined} data-testid="document-state">{stateText(d)}</td>
                <td>{d.version}</td>
                <td>{d.format || "—"}</td>
                <td>{d.chunkCount}</td>
                <td>{formatBytes(d.sizeBytes)}</td>
                <td><When at={d.updatedAt} /></td>
                <td>
                  {confirming === d.id ? (
                    <span className="actions">
                      <button type="button" className="danger" onClick={() => void remove(d)}>Yes, delete {label}</button>
                      <button type="button" onClick={() => setConfirming(null)}>Keep it</button>
                    </span>
                  ) : (
                    <button type="button" aria-label={`Delete ${label}`} onClick={() => setConfirming(d.id)}>Delete</button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <LoadMore list={documents} what="documents" />
      {documents.loaded && !documents.error && list.length === 0 && <p className="muted">No documents yet: upload some above.</p>}
    </section>
  );
}

function Uploader({ collection, onUploaded }: { collection: Collection; onUploaded: () => void }) {
  const api = useApi();
  const [items, dispatch] = useReducer(uploadsReducer, []);
  const files = useRef(new Map<string, File>());
  const started = useRef(new Set<string>());
  // The abort of each file on its way: Cancel aborts its request.
  const aborts = useRef(new Map<string, AbortController>());
  const serial = useRef(0);
  const [over, setOver] = useState(false);

  function add(list: FileList | null) {
    if (!list || list.length === 0) return;
    const picked = Array.from(list).map((file) => {
      serial.current += 1;
      const key = `upload-${serial.current}`;
      files.current.set(key, file);
      return { key, name: file.name, size: file.size };
    });
    dispatch({ type: "add", files: picked });
  }

  // Start waiting files while fewer than the concurrency are on their way.
  useEffect(() => {
    for (const key of toStart(items)) {
      const file = files.current.get(key);
      if (!file || started.current.has(key)) continue;
      started.current.add(key);
      dispatch({ type: "start", key });
      const form = new FormData();
      form.append("file", file, file.name);
      // The file's name is its externalId: uploading it again updates that document (or
      // leaves it unchanged) instead of adding a copy.
      form.append("externalId", file.name);
      const abort = new AbortController();
      aborts.current.set(key, abort);
      api
        .upload<IngestOut>(
          `/api/v1/knowledge/collections/${encodeURIComponent(collection.id)}/files`,
          form,
          (loaded, total) => dispatch({ type: "progress", key, loaded, total }),
          abort.signal,
        )
        .then((out) => {
          dispatch({ type: "done", key, outcome: out.outcome, documentId: out.document.id });
          onUploaded();
        })
        // A cancelled file's rejection keeps it cancelled (the reducer ignores it).
        .catch((e: unknown) => dispatch({ type: "failed", key, error: messageOf(e) }))
        .finally(() => {
          files.current.delete(key);
          aborts.current.delete(key);
        });
    }
  }, [items, api, collection.id, onUploaded]);

  // Leaving the collection cancels what is still on its way.
  useEffect(() => {
    const pending = aborts.current;
    return () => pending.forEach((abort) => abort.abort());
  }, []);

  function cancel(key: string) {
    // Marked first, so the aborted request's rejection finds it cancelled; a file still
    // waiting is never started.
    dispatch({ type: "cancel", key });
    aborts.current.get(key)?.abort();
    files.current.delete(key);
  }

  function drop(event: DragEvent) {
    event.preventDefault();
    setOver(false);
    add(event.dataTransfer.files);
  }

  const done = items.filter((i) => i.state === "uploaded").length;
  const failed = items.filter((i) => i.state === "failed").length;
  const cancelled = items.filter((i) => i.state === "cancelled").length;
  const going = items.length - done - failed - cancelled;
  return (
    <div>
      <h3>Upload documents</h3>
      <div
        className={over ? "dropzone over" : "dropzone"}
        data-testid="dropzone"
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={drop}
      >
        <label htmlFor="k-files">Files to upload (PDF, DOCX, HTML, Markdown, text; up to 100 MB each)</label>
        <input
          id="k-files"
          type="file"
          multiple
          accept=".pdf,.docx,.html,.htm,.md,.markdown,.txt,application/pdf,text/plain,text/markdown,text/html"
          onChange={(e) => {
            add(e.target.files);
            e.target.value = "";
          }}
        />
        <p className="muted">or drop files here.</p>
      </div>
      {items.length > 0 && (
        <>
          <p role="status" data-testid="upload-summary">
            {done} uploaded, {failed} failed, {cancelled > 0 && `${cancelled} cancelled, `}{going} on their way.
          </p>
          <ul className="uploads" aria-label="Uploads">
            {items.map((item) => (
              <li key={item.key} data-testid="upload" data-state={item.state}>
                <span className="upload-name">
                  {item.name} <span className="muted">({formatBytes(item.size)})</span>
                </span>
                <progress max={100} value={percentSent(item)} aria-label={`${item.name} sent`} />
                <span className={item.state === "failed" ? "upload-status error" : "upload-status"} data-testid="upload-status">{uploadStatus(item)}</span>
                {cancellable(item) && (
                  <button type="button" onClick={() => cancel(item.key)} aria-label={`Cancel ${item.name}`}>Cancel</button>
                )}
              </li>
            ))}
          </ul>
          <button type="button" onClick={() => dispatch({ type: "clear" })} disabled={done + failed + cancelled === 0}>
            Clear finished uploads
          </button>
        </>
      )}
    </div>
  );
}

function SearchPanel({ collections }: { collections: Collection[] }) {
  const api = useApi();
  const [query, setQuery] = useState("");
  const [chosen, setChosen] = useState<string[]>([]);
  const [mode, setMode] = useState<SearchMode>("hybrid");
  const [k, setK] = useState(5);
  const [result, setResult] = useState<SearchOut | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const names = new Map(collections.map((c) => [c.id, c.name]));

  async function search(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      setResult(await api.json<SearchOut>("POST", "/api/v1/knowledge/search", { query: query.trim(), collections: chosen, mode, k }));
    } catch (e) {
      setResult(null);
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }

  function toggle(id: string, on: boolean) {
    setChosen((was) => (on ? [...was, id] : was.filter((c) => c !== id)));
  }

  return (
    <section aria-labelledby="search-title">
      <h2 id="search-title">Search</h2>
      <form className="card wide" onSubmit={search} aria-label="Search passages">
        <label htmlFor="s-query">Search query</label>
        <input id="s-query" value={query} onChange={(e) => setQuery(e.target.value)} required maxLength={2000} />
        <fieldset>
          <legend>Collections (none chosen: all)</legend>
          {collections.map((c) => (
            <label key={c.id} className="check">
              <input type="checkbox" checked={chosen.includes(c.id)} onChange={(e) => toggle(c.id, e.target.checked)} /> {c.name}
            </label>
          ))}
        </fieldset>
        <div className="inline">
          <label htmlFor="s-mode">Mode</label>
          <select id="s-mode" value={mode} onChange={(e) => setMode(e.target.value as SearchMode)}>
            <option value="hybrid">hybrid</option>
            <option value="vector">vector</option>
            <option value="keyword">keyword</option>
          </select>
          <label htmlFor="s-k">Passages (k)</label>
          <input id="s-k" type="number" min={1} max={100} value={k} onChange={(e) => setK(Number(e.target.value))} />
        </div>
        <button type="submit" disabled={busy}>Search</button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
      <p role="status" className="muted">
        {busy ? "Searching…" : result ? `${result.passages.length} passages (${result.mode}).` : ""}
      </p>
      {result && (
        <ol className="passages" aria-label="Passages, best first">
          {result.passages.map((p) => (
            <PassageItem key={p.chunkId} passage={p} collection={names.get(p.collectionId) ?? p.collectionId} />
          ))}
        </ol>
      )}
    </section>
  );
}

function PassageItem({ passage, collection }: { passage: Passage; collection: string }) {
  return (
    <li className="passage" data-testid="passage">
      <div className="citation" data-testid="citation">
        <strong>{citationText(passage.title, passage.citation)}</strong> <span className="muted">in {collection}</span>
      </div>
      <blockquote className="passage-text">{passage.text}</blockquote>
      <dl className="scores" data-testid="score-parts">
        <div className="score-part">
          <dt>score</dt>
          <dd>{formatScore(passage.score)}</dd>
        </div>
        {scoreParts(passage).map((part) => (
          <div key={part.name} className={part.found ? "score-part" : "score-part muted"}>
            <dt>{part.name}</dt>
            <dd>
              {part.value} <span className="muted">({part.rank})</span>
            </dd>
          </div>
        ))}
      </dl>
    </li>
  );
}
