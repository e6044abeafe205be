// The runs table shared by the experiment dashboard and a run's child runs.
import type { ComponentChildren, JSX } from "preact";
import { useRef, useState } from "preact/hooks";
import type { RunSummary } from "../lib/api";
import { formatDuration, formatNumber, formatValue, runDuration } from "../lib/format";
import type { Summary } from "../lib/metrics";
import { href } from "../lib/router";
import { Id, Mono, RunLink, StatusPill, Tags, Time } from "../components/ui";

export type Stat = "last" | "min" | "max";

export interface RunsTableProps {
  runs: RunSummary[];
  now: number;
  metrics?: string[];
  stat?: Stat;
  /** run id → metric name → its last/min/max (absent: not read yet). */
  values?: Map<string, Record<string, Summary | null>>;
  selected?: Set<string>;
  onSelect?: (runId: string, on: boolean) => void;
  onSelectAll?: (on: boolean) => void;
  sort?: string;
  order?: "asc" | "desc";
  onSort?: (key: string) => void;
  expanded?: Set<string>;
  onExpand?: (runId: string) => void;
  children?: Map<string, RunSummary[] | "loading" | Error>;
  showExperiment?: boolean;
  /** A compute target's page: every run has that target, no column for it. */
  hideCompute?: boolean;
  /** More columns after the tags (a target's page: the agent holding the run). */
  extraColumns?: { head: string; cell: (r: RunSummary) => ComponentChildren }[];
}

function metricCell(values: Map<string, Record<string, Summary | null>> | undefined, runId: string, name: string, stat: Stat) {
  const record = values?.get(runId);
  if (!record) return <span class="muted">…</span>;
  const s = record[name];
  if (!s) return <span class="muted">—</span>;
  const v = stat === "last" ? s.last : stat === "min" ? s.min : s.max;
  const title = s.count > 1 ? `last ${formatValue(s.last)} · min ${s.min === null ? "—" : formatNumber(s.min)} · max ${s.max === null ? "—" : formatNumber(s.max)} · ${s.count} values` : undefined;
  return <span class="mono" title={title}>{formatValue(v)}</span>;
}

const VIRTUAL_FROM = 300;
const ROW_HEIGHT = 53;
const OVERSCAN = 15;

export function RunsTable(p: RunsTableProps) {
  const box = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const metrics = p.metrics ?? [];
  const extra = p.extraColumns ?? [];
  const stat = p.stat ?? "last";
  const selectable = !!p.onSelect;
  const allSelected = selectable && p.runs.length > 0 && p.runs.every((r) => p.selected?.has(r.run_id));
  const sortHead = (key: string, label: ComponentChildren, cls = "") => {
    const active = p.sort === key;
    if (!p.onSort) return <th class={cls}>{label}</th>;
    return (
      <th class={`sortable ${cls} ${active ? "sorted" : ""}`} onClick={() => p.onSort?.(key)} title="Sort">
        {label}
        <span class="sort-mark">{active ? (p.order === "asc" ? " ▲" : " ▼") : ""}</span>
      </th>
    );
  };
  const row = (r: RunSummary, depth: number) => (
    <tr key={r.run_id} class={depth ? "child-row" : ""} data-run-id={r.run_id}>
      {selectable && (
        <td class="check">
          <input
            type="checkbox"
            checked={p.selected?.has(r.run_id)}
            onChange={(e) => p.onSelect?.(r.run_id, (e.target as HTMLInputElement).checked)}
            aria-label={`Select ${r.display_name ?? r.run_id}`}
          />
        </td>
      )}
      <td class="name-cell">
        <span style={{ paddingLeft: `${depth * 22}px` }} class="name-inner">
          {p.onExpand && depth === 0 ? (
            <button class="expander" onClick={() => p.onExpand?.(r.run_id)} title="Child runs" aria-expanded={p.expanded?.has(r.run_id)}>
              {p.expanded?.has(r.run_id) ? "▾" : "▸"}
            </button>
          ) : depth ? <span class="child-mark">↳</span> : null}
          <RunLink runId={r.run_id} label={r.display_name} />
        </span>
        {r.display_name && <div class="sub mono"><Id value={r.run_id} /></div>}
      </td>
      {p.showExperiment && <td><a href={href.experiment(r.experiment)}>{r.experiment}</a></td>}
      <td><StatusPill status={r.status} /></td>
      {!p.hideCompute && <td>{r.compute_target ? <a href={href.target(r.compute_target)}>{r.compute_target}</a> : <span class="muted">—</span>}</td>}
      <td><Time iso={r.created_at} /></td>
      <td class="num">{r.started_at ? formatDuration(runDuration(r, p.now)) : !r.ended_at ? <span class="muted" title="Not started yet: time since it was created">waiting {formatDuration(runDuration(r, p.now))}</span> : <span class="muted">—</span>}</td>
      <td class="tags-cell"><Tags tags={r.tags} /></td>
      {extra.map((c) => <td key={c.head}>{c.cell(r)}</td>)}
      {metrics.map((m) => <td class="num" key={m}>{metricCell(p.values, r.run_id, m, stat)}</td>)}
    </tr>
  );
  const columns = 5 + (p.hideCompute ? 0 : 1) + (selectable ? 1 : 0) + (p.showExperiment ? 1 : 0) + extra.length + metrics.length;
  const items: JSX.Element[] = [];
  for (const r of p.runs) {
    items.push(row(r, 0));
    const kids = p.expanded?.has(r.run_id) ? p.children?.get(r.run_id) : undefined;
    if (kids === "loading")
      items.push(<tr key={`${r.run_id}-loading`} class="child-row"><td colSpan={columns} class="muted">Loading child runs…</td></tr>);
    else if (kids instanceof Error)
      items.push(<tr key={`${r.run_id}-error`} class="child-row"><td colSpan={columns} class="error-text">{kids.message}</td></tr>);
    else if (kids && kids.length === 0)
      items.push(<tr key={`${r.run_id}-none`} class="child-row"><td colSpan={columns} class="muted">No child runs.</td></tr>);
    else if (kids) for (const k of kids) items.push(row(k, 1));
  }
  // Thousands of rows: only those near the visible part of the (scrolling) table are in
  // the DOM; rows then have one fixed height.
  const virtual = items.length > VIRTUAL_FROM;
  const viewRows = Math.ceil((box.current?.clientHeight || 800) / ROW_HEIGHT);
  const first = virtual ? Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN) : 0;
  const last = virtual ? Math.min(items.length, first + viewRows + 2 * OVERSCAN) : items.length;
  return (
    <div
      ref={box}
      class={`table-wrap runs-table-wrap ${virtual ? "virtual" : ""}`}
      onScroll={virtual ? (e) => setScrollTop((e.currentTarget as HTMLDivElement).scrollTop) : undefined}
    >
    <table class="table runs-table">
      <thead>
        <tr>
          {selectable && (
            <th class="check">
              <input type="checkbox" checked={allSelected} onChange={(e) => p.onSelectAll?.((e.target as HTMLInputElement).checked)} aria-label="Select all" />
            </th>
          )}
          <th>Run</th>
          {p.showExperiment && <th>Experiment</th>}
          <th>Status</th>
          {!p.hideCompute && <th>Compute</th>}
          {sortHead("created_at", "Created")}
          <th class="num">Duration</th>
          <th>Tags</th>
          {extra.map((c) => <th key={c.head}>{c.head}</th>)}
          {metrics.map((m) => sortHead(`metric:${m}`, <span title={`${m} (${stat}; sorting uses the last value)`}>{m}{stat !== "last" && <span class="muted"> · {stat}</span>}</span>, "num"))}
        </tr>
      </thead>
      <tbody>
        {virtual && <tr class="spacer" style={{ height: `${first * ROW_HEIGHT}px` }} aria-hidden="true" />}
        {items.slice(first, last)}
        {virtual && <tr class="spacer" style={{ height: `${(items.length - last) * ROW_HEIGHT}px` }} aria-hidden="true" />}
      </tbody>
    </table>
    </div>
  );
}

export { Mono };
