import { FormEvent, useState } from "react";
import { useApi } from "../api/context";
import { messageOf, usePaged } from "../api/hooks";
import type { User } from "../api/types";
import { When } from "../components/Dates";
import { LoadMore } from "../components/LoadMore";

const ROLES = ["member", "admin", "integrator", "viewer"];

export function AdminUsersPage() {
  const api = useApi();
  const users = usePaged<User>("/api/v1/users?pageSize=200", "users");
  const [email, setEmail] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState("member");
  const [error, setError] = useState<string | null>(null);

  async function run(what: () => Promise<unknown>) {
    setError(null);
    try {
      await what();
      users.reload();
      return true;
    } catch (e) {
      setError(messageOf(e));
      return false;
    }
  }

  async function create(event: FormEvent) {
    event.preventDefault();
    if (await run(() => api.json("POST", "/api/v1/users", { email: email.trim(), displayName: displayName.trim(), password, role }))) {
      setEmail("");
      setDisplayName("");
      setPassword("");
    }
  }

  function remove(u: User) {
    if (!window.confirm(`Delete ${u.email}? Everything the fleet holds about them is erased.`)) return;
    void run(() => api.json("DELETE", `/api/v1/users/${u.id}`));
  }

  return (
    <div>
      <h1>Users</h1>
      {(users.error || error) && <p role="alert" className="error">{users.error || error}</p>}
      <table>
        <caption className="visually-hidden">Users of the tenant</caption>
        <thead>
          <tr>
            <th scope="col">Email</th>
            <th scope="col">Name</th>
            <th scope="col">Role</th>
            <th scope="col">Locked until</th>
            <th scope="col">Created</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {users.items.map((u) => (
            <tr key={u.id}>
              <td>{u.email}</td>
              <td>{u.displayName}</td>
              <td>{u.role}</td>
              <td><When at={u.lockedUntil} /></td>
              <td><When at={u.createdAt} /></td>
              <td>
                <button type="button" onClick={() => remove(u)} aria-label={`Delete user ${u.email}`}>Delete</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <LoadMore list={users} what="users" />
      <form className="card" onSubmit={create} aria-label="Create a user">
        <h2>Create a user</h2>
        <label htmlFor="u-email">Email</label>
        <input id="u-email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} required autoComplete="off" />
        <label htmlFor="u-name">Display name</label>
        <input id="u-name" value={displayName} onChange={(e) => setDisplayName(e.target.value)} />
        <label htmlFor="u-password">Password</label>
        <input id="u-password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} required autoComplete="new-password" />
        <label htmlFor="u-role">Role</label>
        <select id="u-role" value={role} onChange={(e) => setRole(e.target.value)}>
          {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
        </select>
        <button type="submit">Create user</button>
      </form>
    </div>
  );
}
