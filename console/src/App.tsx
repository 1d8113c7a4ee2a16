import { Suspense } from "react";
import { NavLink, Navigate, Route, Routes } from "react-router-dom";
import { useApi, useSignedIn } from "./api/context";
import { pages } from "./pages";
import { SignInPage } from "./pages/SignIn";

export function App() {
  const signedIn = useSignedIn();
  if (!signedIn) return <SignInPage />;
  return <Shell />;
}

function Shell() {
  const api = useApi();
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">EDRS console</span>
        <button type="button" onClick={() => void api.signOut()}>
          Sign out
        </button>
      </header>
      <nav aria-label="Console" className="side">
        {(["work", "admin"] as const).map((section) => (
          <div key={section}>
            <h2 className="nav-section">{section === "work" ? "Workspace" : "Administration"}</h2>
            <ul>
              {pages
                .filter((p) => p.section === section)
                .map((p) => (
                  <li key={p.link}>
                    <NavLink to={`/${p.link}`}>{p.label}</NavLink>
                  </li>
                ))}
            </ul>
          </div>
        ))}
      </nav>
      <main id="main" className="content" tabIndex={-1}>
        <Suspense fallback={<p role="status">Loading…</p>}>
        <Routes>
          {pages.map((p) => (
            <Route key={p.path} path={p.path} element={p.element} />
          ))}
          <Route path="*" element={<Navigate to="/chat" replace />} />
        </Routes>
        </Suspense>
      </main>
    </div>
  );
}
