// Real paths with the history API: every page has a URL to share.
import { useEffect, useState } from "preact/hooks";

type Listener = () => void;
const listeners = new Set<Listener>();

export function navigate(to: string, { replace = false } = {}): void {
  const current = location.pathname + location.search;
  if (to === current) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  if (!replace) window.scrollTo(0, 0);
  listeners.forEach((l) => l());
}

/** Change query parameters of the current URL (null removes one) without a new entry. */
export function setQuery(changes: Record<string, string | null>): void {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === "") params.delete(key);
    else params.set(key, value);
  }
  const search = params.toString();
  navigate(location.pathname + (search ? `?${search}` : ""), { replace: true });
}

if (typeof window !== "undefined") window.addEventListener("popstate", () => listeners.forEach((l) => l()));

export interface Location {
  path: string;
  query: URLSearchParams;
}

export function useLocation(): Location {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((t) => t + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** Links are plain <a href>: a click without modifier keys navigates in place. */
export function onLinkClick(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = (event.target as Element | null)?.closest?.("a");
  if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
  const href = anchor.getAttribute("href");
  if (!href || !href.startsWith("/") || href.startsWith("/v1/") || href.startsWith("/studio/")) return;
  event.preventDefault();
  navigate(href);
}

export type Route =
  | { page: "experiments" }
  | { page: "experiment"; name: string }
  | { page: "run"; runId: string }
  | { page: "compute" }
  | { page: "target"; target: string }
  | { page: "models" }
  | { page: "model"; name: string }
  | { page: "notfound" };

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function match(path: string): Route {
  const parts = path.replace(/\/+$/, "").split("/").slice(1);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "")) return { page: "experiments" };
  const [head, ...rest] = parts;
  const tail = rest.map(decode).join("/");
  switch (head) {
    case "experiments":
      return tail ? { page: "experiment", name: tail } : { page: "experiments" };
    case "runs":
      return tail ? { page: "run", runId: tail } : { page: "experiments" };
    case "compute":
      return tail ? { page: "target", target: tail } : { page: "compute" };
    case "models":
      return tail ? { page: "model", name: tail } : { page: "models" };
    default:
      return { page: "notfound" };
  }
}

const e = encodeURIComponent;
export const href = {
  experiments: () => "/",
  experiment: (name: string, workspace?: string | null) =>
    `/experiments/${e(name)}${workspace ? `?workspace=${e(workspace)}` : ""}`,
  run: (runId: string, tab?: string) => `/runs/${e(runId)}${tab ? `?tab=${tab}` : ""}`,
  compute: () => "/compute",
  target: (target: string) => `/compute/${e(target)}`,
  models: () => "/models",
  model: (name: string) => `/models/${e(name)}`,
};
