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
});
