import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";

export interface Async<T> {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => void;
  /** Replace the data in place (live updates). */
  set: (update: (previous: T | undefined) => T | undefined) => void;
}

/** Load with `load` whenever `deps` change; the previous request is aborted. */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Async<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ data: s.data, loading: true }));
    loadRef
      .current(controller.signal)
      .then((data) => {
        if (!controller.signal.aborted) setState({ data, loading: false });
      })
      .catch((error: Error) => {
        if (controller.signal.aborted || error.name === "AbortError") return;
        setState((s) => ({ data: s.data, error, loading: false }));
      });
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return {
    data: state.data,
    error: state.error,
    loading: state.loading,
    reload: () => setTick((t) => t + 1),
    set: (update) => setState((s) => ({ ...s, data: update(s.data) })),
  };
}

/** Call `fn` every `ms` while the tab is visible (not at all when ms is null). */
export function useInterval(fn: () => void, ms: number | null): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (ms === null) return;
    const id = window.setInterval(() => {
      if (document.visibilityState === "visible") ref.current();
    }, ms);
    return () => window.clearInterval(id);
  }, [ms]);
}

/** Re-render every `ms` (durations of running runs, "x min ago"). */
export function useNow(ms: number | null = 1000): number {
  const [now, setNow] = useState(Date.now());
  useInterval(() => setNow(Date.now()), ms);
  return now;
}

export type StreamState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * An EventSource on `url` (null: none) calling `handlers[event](data)`. The browser
 * reconnects by itself and resumes with Last-Event-ID, so nothing is lost; when the
 * server refuses (4xx) the browser gives up and the state reads "closed".
 */
export function useEventSource(
  url: string | null,
  handlers: Record<string, (data: any) => void>,
): StreamState {
  const [state, setState] = useState<StreamState>("connecting");
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    if (!url) {
      setState("closed");
      return;
    }
    setState("connecting");
    const source = new EventSource(url);
    source.onopen = () => setState("open");
    source.onerror = () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    const names = Object.keys(ref.current);
    const listeners = names.map((name) => {
      const listener = (event: MessageEvent) => {
        let data: unknown;
        try {
          data = JSON.parse(event.data as string);
        } catch {
          return;
        }
        ref.current[name]?.(data);
      };
      source.addEventListener(name, listener as EventListener);
      return [name, listener] as const;
    });
    return () => {
      listeners.forEach(([name, l]) => source.removeEventListener(name, l as EventListener));
      source.close();
    };
  }, [url]);
  return state;
}

/** Debounce-free throttle: run at once, then at most once per `ms` (trailing call kept). */
export function throttle(fn: () => void, ms: number): () => void {
  let last = 0;
  let timer: number | undefined;
  return () => {
    const now = Date.now();
    const wait = last + ms - now;
    if (wait <= 0) {
      last = now;
      fn();
    } else if (timer === undefined) {
      timer = window.setTimeout(() => {
        timer = undefined;
        last = Date.now();
        fn();
      }, wait);
    }
  };
}

/** The tab's title for the page shown (shared links and history read well). */
export function useTitle(title: string | null | undefined): void {
  useEffect(() => {
    document.title = title ? `${title} · Runstream` : "Runstream studio";
  }, [title]);
}
