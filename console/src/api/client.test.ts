import { describe, expect, it } from "vitest";
import { ApiClient, ApiError, type TokenStore, type Tokens } from "./client";

function memoryStore(initial: Tokens | null = null): TokenStore & { tokens: Tokens | null } {
  return {
    tokens: initial,
    load() {
      return this.tokens;
    },
    save(t) {
      this.tokens = t;
    },
  };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

describe("ApiClient", () => {
  it("signs in, sends the bearer token, and refreshes once on a 401", async () => {
    const calls: { url: string; auth: string | null; body?: string }[] = [];
    let issued = 0;
    const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
      const auth = new Headers(init?.headers).get("Authorization");
      calls.push({ url: String(url), auth, body: init?.body as string | undefined });
      if (String(url).endsWith("/auth/token")) {
        issued += 1;
        return json(200, { accessToken: `a${issued}`, refreshToken: `r${issued}`, expiresIn: 3600 });
      }
      return auth === "Bearer a1" ? json(401, { status: 401, code: "unauthenticated" }) : json(200, { ok: auth });
    };
    const store = memoryStore();
    const api = new ApiClient(store, "", fetcher as typeof fetch);
    await api.signIn("t", "ann@example.com", "pw");
    expect(api.signedIn).toBe(true);
    expect(await api.json("GET", "/api/v1/tenant")).toEqual({ ok: "Bearer a2" });
    const grants = calls.filter((c) => c.url.endsWith("/auth/token")).map((c) => JSON.parse(c.body!).grantType);
    expect(grants).toEqual(["password", "refreshToken"]);
    expect(store.tokens?.refreshToken).toBe("r2");
  });

  it("signs out when the refresh is refused, and reports problems as ApiError", async () => {
    const fetcher = async (url: RequestInfo | URL) =>
      String(url).endsWith("/auth/token")
        ? json(401, { status: 401, code: "unauthenticated", detail: "refresh token revoked" })
        : json(401, { status: 401, code: "unauthenticated" });
    const store = memoryStore({ accessToken: "old", refreshToken: "r", expiresAt: Date.now() + 3_600_000 });
    const api = new ApiClient(store, "", fetcher as typeof fetch);
    const seen: boolean[] = [];
    api.onChange((s) => seen.push(s));
    await expect(api.json("GET", "/api/v1/tenant")).rejects.toBeInstanceOf(ApiError);
    expect(api.signedIn).toBe(false);
    expect(store.tokens).toBeNull();
    expect(seen).toContain(false);
  });

  it("refreshes before a request when the access token is about to expire", async () => {
    const grants: string[] = [];
    const fetcher = async (url: RequestInfo | URL, init?: RequestInit) => {
      if (String(url).endsWith("/auth/token")) {
        grants.push(JSON.parse(init!.body as string).grantType);
        return json(200, { accessToken: "fresh", refreshToken: "r2", expiresIn: 3600 });
      }
      return json(200, { auth: new Headers(init?.headers).get("Authorization") });
    };
    const store = memoryStore({ accessToken: "stale", refreshToken: "r1", expiresAt: Date.now() + 5_000 });
    const api = new ApiClient(store, "", fetcher as typeof fetch);
    expect(await api.json("GET", "/api/v1/tenant")).toEqual({ auth: "Bearer fresh" });
    expect(grants).toEqual(["refreshToken"]);
  });

  it("uploads a form with the bearer token, reports its progress, and retries once after a 401", async () => {
    const sent: { url: string; auth: string | undefined }[] = [];
    const progress: [number, number][] = [];
    // A stand-in for XMLHttpRequest: the first answer is 401 (an expired token), then 202.
    const answers = [
      { status: 401, body: { status: 401, code: "unauthenticated" } },
      { status: 202, body: { outcome: "created", document: { id: "d1" } } },
    ];
    class FakeXhr {
      status = 0;
      statusText = "";
      responseText = "";
      headers: Record<string, string> = {};
      url = "";
      upload: { onprogress: ((e: ProgressEvent) => void) | null } = { onprogress: null };
      onload: (() => void) | null = null;
      onerror: (() => void) | null = null;
      onabort: (() => void) | null = null;
      open(_method: string, url: string) {
        this.url = url;
      }
      setRequestHeader(name: string, value: string) {
        this.headers[name] = value;
      }
      send() {
        sent.push({ url: this.url, auth: this.headers.Authorization });
        const answer = answers.shift()!;
        this.upload.onprogress?.({ lengthComputable: true, loaded: 5, total: 10 } as ProgressEvent);
        this.upload.onprogress?.({ lengthComputable: true, loaded: 10, total: 10 } as ProgressEvent);
        this.status = answer.status;
        this.responseText = JSON.stringify(answer.body);
        this.onload?.();
      }
      abort() {}
    }
    const fetcher = async () => json(200, { accessToken: "fresh", refreshToken: "r2", expiresIn: 3600 });
    const store = memoryStore({ accessToken: "old", refreshToken: "r1", expiresAt: Date.now() + 3_600_000 });
    const api = new ApiClient(store, "", fetcher as typeof fetch, () => Date.now(), () => new FakeXhr() as unknown as XMLHttpRequest);
    const out = await api.upload<{ outcome: string }>("/api/v1/knowledge/collections/k/files", new FormData(), (l, t) => progress.push([l, t]));
    expect(out.outcome).toBe("created");
    expect(sent).toEqual([
      { url: "/api/v1/knowledge/collections/k/files", auth: "Bearer old" },
      { url: "/api/v1/knowledge/collections/k/files", auth: "Bearer fresh" },
    ]);
    expect(progress).toContainEqual([10, 10]);
  });

  it("throws the problem an upload is refused with", async () => {
    class RefusingXhr {
      status = 0;
      statusText = "Payload Too Large";
      responseText = "";
      upload = { onprogress: null };
      onload: (() => void) | null = null;
      open() {}
      setRequestHeader() {}
      send() {
        this.status = 413;
        this.responseText = JSON.stringify({ status: 413, code: "payload_too_large", detail: "over 104857600 bytes" });
        this.onload?.();
      }
    }
    const store = memoryStore({ accessToken: "a", refreshToken: null, expiresAt: Date.now() + 3_600_000 });
    const api = new ApiClient(store, "", (async () => json(500, {})) as typeof fetch, () => Date.now(), () => new RefusingXhr() as unknown as XMLHttpRequest);
    const refused = api.upload("/x", new FormData(), () => undefined);
    await expect(refused).rejects.toMatchObject({ message: "over 104857600 bytes", problem: { code: "payload_too_large" } });
    expect(api.signedIn).toBe(true);
  });
});
