import { FormEvent, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, usePaged } from "../api/hooks";
import type { ApiKey } from "../api/types";
import { When } from "../components/Dates";
import { LoadMore } from "../components/LoadMore";

const ROLES = ["integrator", "member", "viewer", "admin"];

export function AdminApiKeysPage() {
  const api = useApi();
  const keys = usePaged<ApiKey>("/api/v1/api-keys?pageSize=200", "apiKeys");
  const [name, setName] = useState("");
  const [role, setRole] = useState("integrator");
  const [created, setCreated] = useState<ApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function create(event: FormEvent) {
    event.preventDefault();
    setError(null);
    try {
      setCreated(await api.json<ApiKey>("POST", "/api/v1/api-keys", { name: name.trim(), role }));
      setName("");
      keys.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  async function revoke(k: ApiKey) {
    if (!window.confirm(`Revoke ${k.name}? Clients using it stop working.`)) return;
    setError(null);
    try {
      await api.json("DELETE", `/api/v1/api-keys/${k.id}`);
      keys.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  }

  return (
    <div>
      <h1>API keys</h1>
      {(keys.error || error) && <p role="alert" className="error">{keys.error || error}</p>}
      {created?.apiKey && (
        <div className="card secret" role="alert" aria-labelledby="key-once">
          <h2 id="key-once">Key {created.name}: shown this once</h2>
          <p>Store it now; the server keeps only its hash.</p>
          <label htmlFor="new-key">API key</label>
          <input id="new-key" readOnly value={created.apiKey} onFocus={(e) => e.currentTarget.select()} data-testid="new-api-key" />
          <button type="button" onClick={() => void navigator.clipboard?.writeText(created.apiKey ?? "")}>Copy</button>
          <button type="button" onClick={() => setCreated(null)}>I stored it</button>
        </div>
      )}
      <table>
        <caption className="visually-hidden">API keys of the tenant</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Prefix</th>
            <th scope="col">Role</th>
            <th scope="col">Scopes</th>
            <th scope="col">Last used</th>
            <th scope="col">Expires</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {keys.items.map((k) => (
            <tr key={k.id}>
              <td>{k.name}</td>
              <td><code>{k.prefix}</code></td>
              <td>{k.role}</td>
              <td>{k.scopes.join(", ") || "all of the role"}</td>
              <td><When at={k.lastUsedAt} /></td>
              <td><When at={k.expiresAt} /></td>
              <td>
                <button type="button" onClick={() => void revoke(k)} aria-label={`Revoke key ${k.name}`}>Revoke</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <LoadMore list={keys} what="API keys" />
      <form className="card" onSubmit={create} aria-label="Create an API key">
        <h2>Create an API key</h2>
        <label htmlFor="k-name">Name</label>
        <input id="k-name" value={name} onChange={(e) => setName(e.target.value)} required />
        <label htmlFor="k-role">Role</label>
        <select id="k-role" value={role} onChange={(e) => setRole(e.target.value)}>
          {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
        </select>
        <button type="submit">Create key</button>
      </form>
    </div>
  );
}
