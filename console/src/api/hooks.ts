import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError } from "./client";
import { useApi } from "./context";
import { mergePage, readPages, withPageToken, type Page } from "./paging";
import type { Persona } from "./types";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
}

/** GET `path` (null: nothing yet) and keep the JSON; `reload` fetches it again. */
export function useGet<T>(path: string | null): Loaded<T> {
  const api = useApi();
  const [state, setState] = useState<{ data: T | null; error: string | null; loading: boolean }>({
    data: null,
    error: null,
    loading: path !== null,
  });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    if (path === null) return;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api
      .json<T>("GET", path)
      .then((data) => live && setState({ data, error: null, loading: false }))
      .catch((e: unknown) => live && setState({ data: null, error: messageOf(e), loading: false }));
    return () => {
      live = false;
    };
  }, [api, path, generation]);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { ...state, reload };
}

export interface PagedList<T> {
  /** Every item of the pages read so far. */
  items: T[];
  /** The first read has answered (the list may be empty). */
  loaded: boolean;
  error: string | null;
  loading: boolean;
  /** The API has a page after the last one read. */
  more: boolean;
  loadingMore: boolean;
  /** Read every page read so far again (a refresh never shrinks what the user opened). */
  reload: () => void;
  /** Read the next page and add it below. */
  loadMore: () => void;
}

const byId = (item: unknown) => String((item as { id: string }).id);

/**
 * GET a paged list (`path` holds its `pageSize`; null: nothing yet), its items under `field`:
 * the first page at once, the next with `loadMore`. A new `path` (another filter) starts again
 * from the first page.
 */
export function usePaged<T>(path: string | null, field: string, keyOf: (item: T) => string = byId): PagedList<T> {
  const api = useApi();
  const [state, setState] = useState({
    items: [] as T[],
    token: "",
    loaded: false,
    error: null as string | null,
    loading: path !== null,
    loadingMore: false,
  });
  const [generation, setGeneration] = useState(0);
  // Pages the user has opened, read again by each refresh.
  const pages = useRef(1);
  // Each read is numbered: the answer of one overtaken by a newer read is dropped.
  const run = useRef(0);
  const readPath = useRef<string | null>(null);
  const key = useRef(keyOf);
  key.current = keyOf;

  const fetchPage = useCallback(
    async (p: string): Promise<Page<T>> => {
      const body = await api.json<Record<string, unknown>>("GET", p);
      return { items: (body[field] as T[] | undefined) ?? [], nextPageToken: String(body.nextPageToken ?? "") };
    },
    [api, field],
  );

  useEffect(() => {
    if (path === null) return;
    const mine = ++run.current;
    if (readPath.current !== path) {
      readPath.current = path;
      pages.current = 1;
      setState((s) => ({ ...s, items: [], token: "", loaded: false, loading: true, error: null }));
    } else {
      setState((s) => ({ ...s, loading: true }));
    }
    readPages(fetchPage, path, pages.current, (item: T) => key.current(item))
      .then((read) => {
        if (run.current !== mine) return;
        setState({ items: read.items, token: read.nextPageToken, loaded: true, error: null, loading: false, loadingMore: false });
      })
      .catch((e: unknown) => {
        if (run.current !== mine) return;
        setState((s) => ({ ...s, loaded: true, error: messageOf(e), loading: false, loadingMore: false }));
      });
  }, [path, generation, fetchPage]);

  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  const { token } = state;
  const loadMore = useCallback(() => {
    if (path === null || !token) return;
    // Counted first: a refresh that overtakes this read reads this page too.
    pages.current += 1;
    const mine = ++run.current;
    setState((s) => ({ ...s, loadingMore: true }));
    fetchPage(withPageToken(path, token))
      .then((page) => {
        if (run.current !== mine) return;
        setState((s) => ({
          ...s,
          items: mergePage(s.items, page.items, (item: T) => key.current(item)),
          token: page.nextPageToken,
          error: null,
          loadingMore: false,
        }));
      })
      .catch((e: unknown) => {
        if (run.current !== mine) return;
        pages.current -= 1;
        setState((s) => ({ ...s, error: messageOf(e), loadingMore: false }));
      });
  }, [path, token, fetchPage]);

  return {
    items: state.items,
    loaded: state.loaded,
    error: state.error,
    loading: state.loading,
    more: state.token !== "",
    loadingMore: state.loadingMore,
    reload,
    loadMore,
  };
}

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) {
    // A field's error the detail already says (the gateway names the first one there) is not
    // repeated.
    const fields = (error.problem.errors ?? [])
      .map((e) => `${e.pointer ?? ""} ${e.detail ?? ""}`.trim())
      .filter((f) => f && !error.message.includes(f.replace(/^(\S+) /, "$1: ")) && !error.message.includes(f));
    return [error.message, ...fields].join("; ");
  }
  return error instanceof Error ? error.message : String(error);
}

export function usePersonas(includeArchived = false): Loaded<{ personas: Persona[] }> {
  return useGet<{ personas: Persona[] }>(
    `/api/v1/personas?pageSize=200${includeArchived ? "&includeArchived=true" : ""}`,
  );
}
