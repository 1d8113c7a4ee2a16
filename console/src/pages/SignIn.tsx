import { FormEvent, useEffect, useState } from "react";
import { useApi } from "../api/context";
import { messageOf } from "../api/hooks";

export function SignInPage() {
  const api = useApi();
  const [tenantId, setTenantId] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  // Beside a development fleet the gateway says where its admin logs in (404 elsewhere).
  useEffect(() => {
    fetch("/api/v1/auth/development-login")
      .then((r) => (r.ok ? r.json() : null))
      .then((dev: { tenantId: string; email: string } | null) => {
        if (!dev) return;
        setTenantId((t) => t || dev.tenantId);
        setEmail((e) => e || dev.email);
      })
      .catch(() => undefined);
  }, []);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.signIn(tenantId.trim(), email.trim(), password);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin" id="main">
      <h1>Sign in to EDRS</h1>
      <form onSubmit={submit} aria-describedby={error ? "signin-error" : undefined}>
        <label htmlFor="tenant">Tenant id</label>
        <input id="tenant" value={tenantId} onChange={(e) => setTenantId(e.target.value)} required autoComplete="organization" />
        <label htmlFor="email">Email</label>
        <input id="email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} required autoComplete="username" />
        <label htmlFor="password">Password</label>
        <input id="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} required autoComplete="current-password" />
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p id="signin-error" role="alert" className="error">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
