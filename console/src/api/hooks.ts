import { useCallback, useEffect, useState } from "react";
import { ApiError } from "./client";
import { useApi } from "./context";
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
