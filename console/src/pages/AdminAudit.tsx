import { useState } from "react";
import { useGet } from "../api/hooks";
import type { AuditEvent } from "../api/types";
import { When } from "../components/Dates";

export function AdminAuditPage() {
  const [token, setToken] = useState("");
  const [previous, setPrevious] = useState<string[]>([]);
  const page = useGet<{ auditEvents: AuditEvent[]; nextPageToken: string }>(
    `/api/v1/audit-events?pageSize=50${token ? `&pageToken=${encodeURIComponent(token)}` : ""}`,
  );
  const next = page.data?.nextPageToken;
  return (
    <div>
      <h1>Audit log</h1>
      {page.error && <p role="alert" className="error">{page.error}</p>}
      <table>
        <caption className="visually-hidden">Audit events, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Actor</th>
            <th scope="col">Action</th>
            <th scope="col">Outcome</th>
            <th scope="col">Target</th>
            <th scope="col">Details</th>
          </tr>
        </thead>
        <tbody>
          {(page.data?.auditEvents ?? []).map((a) => (
            <tr key={a.id}>
              <td><When at={a.createdAt} /></td>
              <td>{a.actor}</td>
              <td>{a.action}</td>
              <td>{a.outcome}</td>
              <td>{a.target}</td>
              <td><code>{JSON.stringify(a.details)}</code></td>
            </tr>
          ))}
        </tbody>
      </table>
      <nav aria-label="Audit log pages" className="pager">
        <button type="button" disabled={previous.length === 0} onClick={() => { setToken(previous[previous.length - 1]); setPrevious(previous.slice(0, -1)); }}>
          Newer
        </button>
        <button type="button" disabled={!next} onClick={() => { setPrevious([...previous, token]); setToken(next ?? ""); }}>
          Older
        </button>
      </nav>
    </div>
  );
}
