import { useEffect, useState } from "preact/hooks";
import { loginNeeded, onLoginNeeded, signalUnauthorized } from "./lib/auth";
import { href, match, onLinkClick, useLocation } from "./lib/router";
import { Empty } from "./components/ui";
import { ExperimentsPage } from "./pages/Experiments";
import { ExperimentPage } from "./pages/Experiment";
import { RunPage } from "./pages/Run";
import { ComputePage, TargetPage } from "./pages/Compute";
import { ModelPage, ModelsPage } from "./pages/Models";
import { Login } from "./pages/Login";

interface Session {
  auth: boolean;
  authenticated: boolean;
  workspaces: string[] | null;
}

function SignOut({ session }: { session: Session }) {
  const signOut = async () => {
    await fetch("/studio/logout", { method: "POST", credentials: "same-origin" }).catch(() => null);
    location.reload();
  };
  return (
    <span class="session">
      <span class="muted small" title={session.workspaces ? `Workspaces: ${session.workspaces.join(", ")}` : "Every workspace"}>
        {session.workspaces ? session.workspaces.join(", ") : "all workspaces"}
      </span>
      <button class="btn btn-tiny" onClick={signOut}>Sign out</button>
    </span>
  );
}

function TopBar({ path, session }: { path: string; session: Session | null }) {
  const section = path.startsWith("/compute") ? "compute" : path.startsWith("/models") ? "models" : "experiments";
  const item = (id: string, to: string, label: string) => (
    <a href={to} class={`nav-item ${section === id ? "nav-active" : ""}`} aria-current={section === id ? "page" : undefined}>
      {label}
    </a>
  );
  return (
    <header class="topbar">
      <a href="/" class="brand" aria-label="Runstream studio home">
        <svg viewBox="0 0 32 32" width="22" height="22" aria-hidden="true">
          <rect width="32" height="32" rx="7" fill="#4f46e5" />
          <path d="M6 22 L12 14 L17 18 L26 8" stroke="white" stroke-width="3" fill="none" stroke-linecap="round" stroke-linejoin="round" />
        </svg>
        <span>Runstream</span>
        <span class="brand-sub">studio</span>
      </a>
      <nav class="nav">
        {item("experiments", href.experiments(), "Experiments")}
        {item("compute", href.compute(), "Compute")}
        {item("models", href.models(), "Models")}
      </nav>
      <div class="topbar-right">
        {session?.auth && session.authenticated && <SignOut session={session} />}
        <a class="nav-item nav-quiet" href="/v1/openapi.json" target="_blank" rel="noreferrer">API</a>
      </div>
    </header>
  );
}

export function App() {
  const { path } = useLocation();
  const [needLogin, setNeedLogin] = useState(loginNeeded());
  const [session, setSession] = useState<Session | null>(null);
  useEffect(() => onLoginNeeded(setNeedLogin), []);
  useEffect(() => {
    // Whether the API wants a token and whether this browser's cookie carries one.
    fetch("/studio/session", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? (r.json() as Promise<Session>) : null))
      .then((s) => {
        if (!s) return;
        setSession(s);
        if (s.auth && !s.authenticated) signalUnauthorized();
      })
      .catch(() => null);
  }, []);
  useEffect(() => {
    document.addEventListener("click", onLinkClick);
    return () => document.removeEventListener("click", onLinkClick);
  }, []);
  const route = match(path);
  let page;
  if (needLogin) page = <Login />;
  else
    switch (route.page) {
      case "experiments":
        page = <ExperimentsPage />;
        break;
      case "experiment":
        page = <ExperimentPage key={route.name} name={route.name} />;
        break;
      case "run":
        page = <RunPage key={route.runId} runId={route.runId} />;
        break;
      case "compute":
        page = <ComputePage />;
        break;
      case "target":
        page = <TargetPage key={route.target} target={route.target} />;
        break;
      case "models":
        page = <ModelsPage />;
        break;
      case "model":
        page = <ModelPage key={route.name} name={route.name} />;
        break;
      default:
        page = (
          <Empty title="No such page">
            <a href="/">Go to the experiments</a>
          </Empty>
        );
    }
  return (
    <div class="app">
      <TopBar path={path} session={session} />
      <main class="main">{page}</main>
    </div>
  );
}
