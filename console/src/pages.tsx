// Every page of the console, in one list: the router and the navigation both read it, so a new
// page is one entry here and one component.
import { lazy, type ReactElement } from "react";
import { AdminApiKeysPage } from "./pages/AdminApiKeys";
import { AdminAuditPage } from "./pages/AdminAudit";
import { AdminUsersPage } from "./pages/AdminUsers";
import { AdminWebhooksPage } from "./pages/AdminWebhooks";
import { ChatPage } from "./pages/Chat";
import { EventsPage } from "./pages/Events";
import { PersonasPage } from "./pages/Personas";
import { RelationshipPage } from "./pages/Relationship";

// Chart.js is loaded with the Work page only, not with the chat a user opens first.
const WorkPage = lazy(() => import("./pages/Work").then((m) => ({ default: m.WorkPage })));
// The knowledge page (uploads, search, the entity graph) is loaded when it is opened.
const KnowledgePage = lazy(() => import("./pages/Knowledge").then((m) => ({ default: m.KnowledgePage })));

export interface PageDef {
  /** Route path under /console (react-router syntax). */
  path: string;
  /** Where the navigation link goes. */
  link: string;
  label: string;
  element: ReactElement;
  section: "work" | "admin";
}

export const pages: PageDef[] = [
  { path: "chat/:personaId?/:conversationId?", link: "chat", label: "Chat", element: <ChatPage />, section: "work" },
  { path: "relationship/:personaId?", link: "relationship", label: "What they know", element: <RelationshipPage />, section: "work" },
  { path: "personas", link: "personas", label: "Personas", element: <PersonasPage />, section: "work" },
  { path: "knowledge/:collection?", link: "knowledge", label: "Knowledge", element: <KnowledgePage />, section: "work" },
  { path: "work", link: "work", label: "Work", element: <WorkPage />, section: "work" },
  { path: "events", link: "events", label: "Events", element: <EventsPage />, section: "work" },
  { path: "admin/users", link: "admin/users", label: "Users", element: <AdminUsersPage />, section: "admin" },
  { path: "admin/api-keys", link: "admin/api-keys", label: "API keys", element: <AdminApiKeysPage />, section: "admin" },
  { path: "admin/webhooks", link: "admin/webhooks", label: "Webhooks", element: <AdminWebhooksPage />, section: "admin" },
  { path: "admin/audit", link: "admin/audit", label: "Audit log", element: <AdminAuditPage />, section: "admin" },
];
