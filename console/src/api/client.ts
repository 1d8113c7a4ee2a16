// The one door to the gateway's public API: bearer tokens, silent refresh, problem+json errors.

export interface Tokens {
  accessToken: string;
  refreshToken: string | null;
  /** Epoch milliseconds at which the access token expires. */
  expiresAt: number;
}

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  code?: string;
  errors?: { in?: string; pointer?: string; detail?: string }[];
}

export class ApiError extends Error {
  constructor(public readonly problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
  }
  get status(): number {
    return this.problem.status;
  }
}

export interface TokenStore {
  load(): Tokens | null;
  save(tokens: Tokens | null): void;
}

/** The session survives a reload of the tab (sessionStorage), not the tab itself. */
export const sessionTokenStore: TokenStore = {
  load() {
    const raw = sessionStorage.getItem("edrs.console.tokens");
    return raw ? (JSON.parse(raw) as Tokens) : null;
  },
  save(tokens) {
    if (tokens) sessionStorage.setItem("edrs.console.tokens", JSON.stringify(tokens));
    else sessionStorage.removeItem("edrs.console.tokens");
  },
};

// Refresh this long before the access token expires, so no request meets an expired one.
const REFRESH_MARGIN_MS = 60_000;

export async function problemOf(response: Response): Promise<Problem> {
  try {
    const body = await response.json();
    if (body && typeof body === "object" && "status" in body) return body as Problem;
  } catch {
    /* not JSON */
  }
  return { status: response.status, title: response.statusText || `HTTP ${response.status}` };
}

export class ApiClient {
  private tokens: Tokens | null;
  private refreshing: Promise<boolean> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<(signedIn: boolean) => void>();

  constructor(
    private readonly store: TokenStore = sessionTokenStore,
    private readonly base = "",
    private readonly fetcher: typeof fetch = (...args) => fetch(...args),
    private readonly now: () => number = () => Date.now(),
    private readonly newRequest: () => XMLHttpRequest = () => new XMLHttpRequest(),
  ) {
    this.tokens = store.load();
    this.schedule();
  }

  get signedIn(): boolean {
    return this.tokens !== null;
  }

  onChange(listener: (signedIn: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async signIn(tenantId: string, email: string, password: string): Promise<void> {
    await this.grant({ grantType: "password", tenantId, email, password });
  }

  async signOut(): Promise<void> {
    const tokens = this.tokens;
    this.setTokens(null);
    if (!tokens) return;
    // Revoke both, so a copied refresh token is worthless too; failures change nothing here.
    for (const token of [tokens.refreshToken, tokens.accessToken]) {
      if (!token) continue;
      await this.fetcher(`${this.base}/api/v1/auth/revoke`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${tokens.accessToken}` },
        body: JSON.stringify({ token }),
      }).catch(() => undefined);
    }
  }

  /** Exchange the refresh token for new tokens; false (and signed out) when that fails. */
  refresh(): Promise<boolean> {
    if (!this.refreshing) {
      const refreshToken = this.tokens?.refreshToken;
      this.refreshing = (async () => {
        if (!refreshToken) return false;
        try {
          await this.grant({ grantType: "refreshToken", refreshToken });
          return true;
        } catch {
          this.setTokens(null);
          return false;
        }
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** A request with the bearer token; a 401 refreshes once and retries. */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    if (this.tokens && this.tokens.expiresAt - this.now() < REFRESH_MARGIN_MS) await this.refresh();
    let response = await this.fetcher(`${this.base}${path}`, this.authorised(init));
    if (response.status === 401 && this.tokens?.refreshToken && (await this.refresh())) {
      response = await this.fetcher(`${this.base}${path}`, this.authorised(init));
    }
    if (response.status === 401) this.setTokens(null);
    return response;
  }

  /** JSON in, JSON out; a problem+json answer throws ApiError. */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: {} };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["Content-Type"] = "application/json";
    }
    const response = await this.fetch(path, init);
    if (!response.ok) throw new ApiError(await problemOf(response));
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  /**
   * POST a form (a file upload) with the bearer token, reporting the bytes sent as they go: fetch
   * cannot report upload progress, XMLHttpRequest can. A 401 refreshes once and sends again; the
   * answer's JSON is returned, a problem+json answer throws ApiError.
   */
  async upload<T>(
    path: string,
    form: FormData,
    onProgress: (loaded: number, total: number) => void,
    signal?: AbortSignal,
  ): Promise<T> {
    if (this.tokens && this.tokens.expiresAt - this.now() < REFRESH_MARGIN_MS) await this.refresh();
    let answer = await this.send(path, form, onProgress, signal);
    if (answer.status === 401 && this.tokens?.refreshToken && (await this.refresh())) {
      answer = await this.send(path, form, onProgress, signal);
    }
    if (answer.status === 401) this.setTokens(null);
    if (answer.status < 200 || answer.status >= 300) throw new ApiError(answer.problem());
    return answer.body as T;
  }

  private send(
    path: string,
    form: FormData,
    onProgress: (loaded: number, total: number) => void,
    signal?: AbortSignal,
  ): Promise<{ status: number; body: unknown; problem: () => Problem }> {
    return new Promise((resolve, reject) => {
      const xhr = this.newRequest();
      xhr.open("POST", `${this.base}${path}`);
      if (this.tokens) xhr.setRequestHeader("Authorization", `Bearer ${this.tokens.accessToken}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e: ProgressEvent) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      };
      xhr.onload = () => {
        let body: unknown = null;
        try {
          body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
        } catch {
          body = null;
        }
        const problem = (): Problem =>
          body && typeof body === "object" && "status" in body
            ? (body as Problem)
            : { status: xhr.status, title: xhr.statusText || `HTTP ${xhr.status}` };
        resolve({ status: xhr.status, body, problem });
      };
      xhr.onerror = () => reject(new Error("the upload could not reach the gateway"));
      xhr.onabort = () => reject(new Error("the upload was cancelled"));
      if (signal) {
        if (signal.aborted) {
          reject(new Error("the upload was cancelled"));
          return;
        }
        signal.addEventListener("abort", () => xhr.abort(), { once: true });
      }
      xhr.send(form);
    });
  }

  private authorised(init: RequestInit): RequestInit {
    const headers = new Headers(init.headers);
    if (this.tokens) headers.set("Authorization", `Bearer ${this.tokens.accessToken}`);
    return { ...init, headers };
  }

  private async grant(body: Record<string, string>): Promise<void> {
    const response = await this.fetcher(`${this.base}/api/v1/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new ApiError(await problemOf(response));
    const got = (await response.json()) as {
      accessToken: string;
      refreshToken?: string;
      expiresIn: number;
    };
    this.setTokens({
      accessToken: got.accessToken,
      refreshToken: got.refreshToken ?? null,
      expiresAt: this.now() + got.expiresIn * 1000,
    });
  }

  private setTokens(tokens: Tokens | null): void {
    const was = this.signedIn;
    this.tokens = tokens;
    this.store.save(tokens);
    this.schedule();
    if (was !== this.signedIn || tokens === null) this.listeners.forEach((l) => l(this.signedIn));
  }

  /** The silent refresh: a timer fires shortly before the access token expires. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.tokens?.refreshToken) return;
    const wait = Math.max(0, this.tokens.expiresAt - this.now() - REFRESH_MARGIN_MS);
    this.timer = setTimeout(() => void this.refresh(), Math.min(wait, 2 ** 31 - 1));
  }
}
