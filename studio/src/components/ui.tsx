import type { ComponentChildren, JSX } from "preact";
import { useState } from "preact/hooks";
import { ApiError, TERMINAL } from "../lib/api";
import { formatTime, formatAgo, formatScalar, scalarType, type Scalar } from "../lib/format";
import { href } from "../lib/router";

export const STATUS_CLASS: Record<string, string> = {
  NotStarted: "idle",
  Queued: "queued",
  Preparing: "queued",
  Running: "running",
  NotResponding: "warn",
  Finalizing: "running",
  CancelRequested: "warn",
  Completed: "ok",
  Failed: "bad",
  Canceled: "idle",
};

export function StatusPill({ status, title }: { status: string; title?: string }) {
  const live = !TERMINAL.has(status) && status !== "NotStarted";
  return (
    <span class={`pill pill-${STATUS_CLASS[status] ?? "idle"}`} title={title ?? status} data-status={status}>
      {live && <span class="pulse" aria-hidden="true" />}
      {status}
    </span>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return (
    <div class="loading" role="status">
      <span class="spinner" aria-hidden="true" />
      {label}
    </div>
  );
}

export function ErrorBanner({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  if (!error) return null;
  const api = error instanceof ApiError ? error : null;
  return (
    <div class="banner banner-error" role="alert">
      <strong>{api ? (api.status ? `Error ${api.status}` : "Unreachable") : "Error"}</strong>
      <span class="banner-text">{error instanceof Error ? error.message : String(error)}</span>
      {onRetry && (
        <button class="btn btn-small" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <div class="empty-title">{title}</div>
      {children && <div class="empty-body">{children}</div>}
    </div>
  );
}

export function Card({ title, actions, children, class: cls }: {
  title?: ComponentChildren;
  actions?: ComponentChildren;
  children: ComponentChildren;
  class?: string;
}) {
  return (
    <section class={`card ${cls ?? ""}`}>
      {(title || actions) && (
        <header class="card-head">
          <h2>{title}</h2>
          <div class="card-actions">{actions}</div>
        </header>
      )}
      <div class="card-body">{children}</div>
    </section>
  );
}

export function Time({ iso, ago = false }: { iso: string | null | undefined; ago?: boolean }) {
  if (!iso) return <span class="muted">—</span>;
  return <time dateTime={iso} title={iso}>{ago ? formatAgo(iso) : formatTime(iso)}</time>;
}

export function RunLink({ runId, label }: { runId: string; label?: string | null }) {
  return (
    <a href={href.run(runId)} class={label ? "" : "mono"} title={runId}>
      {label || <Id value={runId} />}
    </a>
  );
}

export function Mono({ children, title }: { children: ComponentChildren; title?: string }) {
  return <span class="mono" title={title}>{children}</span>;
}

/**
 * An id on one line that never wraps: where there is no room its middle gives way to "…"
 * and its end stays (a run id's timestamp and hash tell runs apart, its start is the
 * experiment). Selecting and copying it gives the whole id; so does the title.
 */
export function Id({ value, tail = 20, class: cls }: { value: string; tail?: number; class?: string }) {
  const cut = value.length > tail * 2 ? value.length - tail : value.length;
  return (
    <span class={`id ${cls ?? ""}`} title={value}>
      <span class="id-head">{value.slice(0, cut)}</span>
      {cut < value.length && <span class="id-tail">{value.slice(cut)}</span>}
    </span>
  );
}

export function CopyId({ value }: { value: string }) {
  const [done, setDone] = useState(false);
  return (
    <span class="copy-id">
      <Id value={value} class="mono" />
      <button
        class="icon-btn"
        title="Copy"
        aria-label="Copy"
        onClick={() => {
          void navigator.clipboard?.writeText(value).then(() => {
            setDone(true);
            setTimeout(() => setDone(false), 1200);
          });
        }}
      >
        {done ? (
          "✓"
        ) : (
          <svg viewBox="0 0 16 16" width="13" height="13" aria-hidden="true">
            <rect x="5" y="5" width="9" height="9" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.4" />
            <path d="M3 11V3.5A1.5 1.5 0 0 1 4.5 2H11" fill="none" stroke="currentColor" stroke-width="1.4" />
          </svg>
        )}
      </button>
    </span>
  );
}

/** Tags (or a model's properties): key, and the value — a number or boolean marked as such. */
export function Tags({ tags }: { tags: Record<string, Scalar | null> }) {
  const entries = Object.entries(tags);
  if (entries.length === 0) return <span class="muted">—</span>;
  return (
    <span class="tags">
      {entries.map(([k, v]) => {
        const text = formatScalar(v);
        const type = scalarType(v);
        return (
          <span class="tag" key={k} title={v === null ? k : `${k}: ${text}${type ? ` (${type})` : ""}`}>
            {k}
            {text !== "" && <span class={type ? `tag-value typed ${type}` : "tag-value"}>{text}</span>}
          </span>
        );
      })}
    </span>
  );
}

/** A property's (or tag's) value: text as is; a number or boolean in its own colour. */
export function ScalarValue({ value }: { value: Scalar | null }) {
  const type = scalarType(value);
  return <span class={type ? `mono wrap typed ${type}` : "mono wrap"} title={type ?? "text"}>{formatScalar(value)}</span>;
}

export function Tabs({ tabs, active, onSelect }: {
  tabs: { id: string; label: ComponentChildren; hidden?: boolean }[];
  active: string;
  onSelect: (id: string) => void;
}) {
  return (
    <nav class="tabs" role="tablist">
      {tabs
        .filter((t) => !t.hidden)
        .map((t) => (
          <button
            key={t.id}
            role="tab"
            aria-selected={t.id === active}
            class={`tab ${t.id === active ? "tab-active" : ""}`}
            onClick={() => onSelect(t.id)}
          >
            {t.label}
          </button>
        ))}
    </nav>
  );
}

export function KeyValues({ items }: { items: [ComponentChildren, ComponentChildren][] }) {
  return (
    <dl class="kv">
      {items.map(([k, v], i) => (
        <div class="kv-row" key={i}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function LiveDot({ state }: { state: string }) {
  const label = state === "open" ? "Live" : state === "closed" ? "Not live" : "Connecting…";
  return (
    <span class={`live live-${state}`} title={`Live updates: ${state}`}>
      <span class="live-dot" />
      {label}
    </span>
  );
}

export function Table({ children, class: cls }: { children: ComponentChildren; class?: string }) {
  return (
    <div class={`table-wrap ${cls ?? ""}`}>
      <table class="table">{children}</table>
    </div>
  );
}

export function Button(props: JSX.HTMLAttributes<HTMLButtonElement> & { variant?: string }) {
  const { variant, class: cls, ...rest } = props;
  return <button class={`btn ${variant ? `btn-${variant}` : ""} ${cls ?? ""}`} {...rest} />;
}
