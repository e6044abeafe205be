// The experiment dashboard: its runs (filtered, sorted, paged by cursor, live statuses),
// metric columns, and the metrics of selected runs overlaid.
import { useEffect, useMemo, useState } from "preact/hooks";
import { enc, getJSON, MAX_SUMMARY_METRICS, qs, STATUSES, TERMINAL, type MetricNamesDoc, type RunPage, type RunSummary } from "../lib/api";
import { useInterval, useNow, useTitle } from "../lib/hooks";
import { fromApiSummary, type Summary } from "../lib/metrics";
import { setQuery, useLocation } from "../lib/router";
import { Card, Empty, ErrorBanner, Spinner } from "../components/ui";
import { ChartToolbar, loadSettings, saveSettings, type ChartSettings } from "../chart/Chart";
import { OverlayChart } from "../chart/OverlayChart";
import { Lazy } from "../chart/Lazy";
import { RunsTable, type Stat } from "./runs";
import { plural } from "../lib/format";

const PAGE = 100;
/** Metric names the column chooser lists at once (search finds the rest). */
const CHOOSER_NAMES = 200;
const ACTIVE = STATUSES.filter((s) => !TERMINAL.has(s));
const STATUS_FILTERS: Record<string, string> = {
  "": "All statuses",
  active: "Active (not ended)",
  Completed: "Completed",
  Failed: "Failed",
  Canceled: "Canceled",
  Running: "Running",
  Queued: "Queued",
};

interface Filters {
  workspace: string | null;
  status: string;
  tag: string;
  target: string;
  /** Metric conditions on the runs' last values: "loss<0.5, acc>=0.9". */
  where: string;
  children: boolean;
  sort: string;
  order: "asc" | "desc";
}

/** "loss<0.5, acc>=0.9" → the API's metric_filter values. */
export function metricFilters(where: string): string[] {
  return where.split(",").map((w) => w.trim()).filter(Boolean);
}

function runsUrl(name: string, f: Filters, columns: string[], cursor?: string | null): string {
  return `/v1/runs${qs({
    metric: columns.slice(0, MAX_SUMMARY_METRICS),
    experiment: name,
    workspace: f.workspace,
    status: f.status === "active" ? ACTIVE.join(",") : f.status,
    tag: f.tag.trim() || undefined,
    compute_target: f.target.trim() || undefined,
    metric_filter: metricFilters(f.where),
    top_level: f.children ? undefined : "true",
    order_by: f.sort === "created_at" ? undefined : f.sort,
    order: f.order === "desc" ? undefined : "asc",
    limit: PAGE,
    cursor,
  })}`;
}

export function ExperimentPage({ name }: { name: string }) {
  const { query } = useLocation();
  useTitle(name);
  const filters: Filters = {
    workspace: query.get("workspace"),
    status: query.get("status") ?? "",
    tag: query.get("tag") ?? "",
    target: query.get("target") ?? "",
    where: query.get("where") ?? "",
    children: query.get("children") === "1",
    sort: query.get("sort") ?? "created_at",
    order: query.get("order") === "asc" ? "asc" : "desc",
  };
  const columns = (query.get("metrics") ?? "").split(",").filter(Boolean);
  const stat = (query.get("stat") as Stat | null) ?? "last";
  const filterKey = JSON.stringify(filters);

  const [runs, setRuns] = useState<RunSummary[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [names, setNames] = useState<string[]>([]);
  const [namesNote, setNamesNote] = useState("");
  const [nameFilter, setNameFilter] = useState("");
  const [selected, setSelected] = useState(new Set<string>());
  const [expanded, setExpanded] = useState(new Set<string>());
  const [kids, setKids] = useState(new Map<string, RunSummary[] | "loading" | Error>());
  const [overlayMetric, setOverlayMetric] = useState<string>("");
  const [settings, setSettings] = useState<ChartSettings>(loadSettings);
  const [draftTag, setDraftTag] = useState(filters.tag);
  const [draftTarget, setDraftTarget] = useState(filters.target);
  const [draftWhere, setDraftWhere] = useState(filters.where);
  const now = useNow(1000);
  const columnsKey = columns.join(",");

  // First page on load and whenever the filters change.
  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    setError(null);
    getJSON<RunPage>(runsUrl(name, filters, columns))
      .then((page) => {
        if (cancelled) return;
        setRuns(page.runs);
        setCursor(page.next_cursor);
        setLoading(false);
      })
      .catch((err: Error) => {
        if (cancelled) return;
        setError(err);
        setLoading(false);
      });
    return () => {
      cancelled = true;
    };
  }, [name, filterKey, columnsKey]);

  // Metric names of the experiment's newest runs (one request, whatever their number).
  useEffect(() => {
    getJSON<MetricNamesDoc>(`/v1/metric-names${qs({ experiment: name, workspace: filters.workspace })}`)
      .then((doc) => {
        setNames(doc.names.filter((n) => n.kinds.includes("series")).map((n) => n.name));
        setNamesNote(`from the newest ${plural(doc.runs_scanned, "run")}`);
      })
      .catch(() => setNames([]));
  }, [name, filters.workspace]);

  // The chosen metric columns' last/min/max come with the runs (?metric=); children's too.
  const values = useMemo(() => {
    const out = new Map<string, Record<string, Summary | null>>();
    const add = (r: RunSummary) => {
      const row: Record<string, Summary | null> = {};
      for (const c of columns) row[c] = fromApiSummary(r.metrics?.[c]);
      out.set(r.run_id, row);
    };
    runs.forEach(add);
    kids.forEach((k) => Array.isArray(k) && k.forEach(add));
    return out;
  }, [runs, kids, columnsKey]);

  // Live: re-read the first page and the active runs every few seconds while any is active.
  const anyActive = runs.some((r) => !TERMINAL.has(r.status));
  useInterval(async () => {
    try {
      const [page, active] = await Promise.all([
        getJSON<RunPage>(runsUrl(name, filters, columns)),
        getJSON<RunPage>(`/v1/runs${qs({ experiment: name, workspace: filters.workspace, status: ACTIVE.join(","), limit: 1000, metric: columns.slice(0, MAX_SUMMARY_METRICS) })}`),
      ]);
      const fresh = new Map<string, RunSummary>();
      page.runs.forEach((r) => fresh.set(r.run_id, r));
      active.runs.forEach((r) => fresh.set(r.run_id, r));
      const ended = runs.filter((r) => !TERMINAL.has(r.status) && !fresh.has(r.run_id)).slice(0, 20);
      const endedDocs = await Promise.all(ended.map((r) => getJSON<RunSummary>(`/v1/runs/${enc(r.run_id)}`).catch(() => null)));
      endedDocs.forEach((r) => r && fresh.set(r.run_id, r));
      setRuns((old) => {
        const known = new Set(old.map((r) => r.run_id));
        const added = filters.sort === "created_at" && filters.order === "desc" ? page.runs.filter((r) => !known.has(r.run_id)) : [];
        return [...added, ...old.map((r) => fresh.get(r.run_id) ?? r)];
      });
    } catch {
      /* the next tick retries; the banner is for the first load */
    }
  }, anyActive ? 2000 : 15000);

  const loadMore = async () => {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await getJSON<RunPage>(runsUrl(name, filters, columns, cursor));
      setRuns((old) => {
        const known = new Set(old.map((r) => r.run_id));
        return [...old, ...page.runs.filter((r) => !known.has(r.run_id))];
      });
      setCursor(page.next_cursor);
    } catch (err) {
      setError(err as Error);
    }
    setLoading(false);
  };

  const toggleExpand = (runId: string) => {
    const next = new Set(expanded);
    if (next.has(runId)) next.delete(runId);
    else {
      next.add(runId);
      if (!kids.has(runId)) {
        setKids((m) => new Map(m).set(runId, "loading"));
        getJSON<RunPage>(`/v1/runs/${enc(runId)}/children${qs({ limit: 1000, metric: columns.slice(0, MAX_SUMMARY_METRICS) })}`)
          .then((page) => setKids((m) => new Map(m).set(runId, page.runs)))
          .catch((err: Error) => setKids((m) => new Map(m).set(runId, err)));
      }
    }
    setExpanded(next);
  };

  const onSort = (key: string) => {
    if (filters.sort === key) setQuery({ order: filters.order === "desc" ? "asc" : null });
    else setQuery({ sort: key === "created_at" ? null : key, order: null });
  };

  const toggleColumn = (metric: string) => {
    const next = columns.includes(metric) ? columns.filter((c) => c !== metric) : [...columns, metric];
    setQuery({ metrics: next.join(",") || null, ...(filters.sort === `metric:${metric}` && !next.includes(metric) ? { sort: null } : {}) });
  };

  const changeSettings = (s: ChartSettings) => {
    setSettings(s);
    saveSettings(s);
  };

  const allRuns = useMemo(() => {
    const m = new Map<string, RunSummary>();
    runs.forEach((r) => m.set(r.run_id, r));
    kids.forEach((k) => Array.isArray(k) && k.forEach((c) => m.set(c.run_id, c)));
    return m;
  }, [runs, kids]);
  const selectedRuns = [...selected].map((id) => allRuns.get(id)).filter((r): r is RunSummary => !!r);
  const matchingNames = useMemo(() => {
    const q = nameFilter.trim().toLowerCase();
    return q ? names.filter((n) => n.toLowerCase().includes(q)) : names;
  }, [names, nameFilter]);
  // A thousand checkboxes is no menu: the chosen ones first, then the first matches.
  const shownNames = useMemo(
    () => [...new Set([...columns.filter((c) => matchingNames.includes(c)), ...matchingNames])].slice(0, CHOOSER_NAMES),
    [matchingNames, columnsKey]);
  const metric = overlayMetric || columns[0] || names[0] || "";

  return (
    <div class="page">
      <div class="page-head">
        <div>
          <div class="crumbs"><a href="/">Experiments</a> /</div>
          <h1>{name}</h1>
          <p class="subtitle">
            {filters.workspace ? <>workspace <span class="mono">{filters.workspace}</span> · </> : null}
            {plural(runs.length, filters.children ? "run" : "top-level run")}{cursor ? " loaded · more below" : ""}
          </p>
        </div>
      </div>

      <div class="filters">
        <select value={filters.status} onChange={(e) => setQuery({ status: (e.target as HTMLSelectElement).value || null })} aria-label="Status">
          {Object.entries(STATUS_FILTERS).map(([v, label]) => <option value={v} key={v}>{label}</option>)}
        </select>
        <form class="inline-form" onSubmit={(e) => { e.preventDefault(); setQuery({ tag: draftTag.trim() || null, target: draftTarget.trim() || null, where: draftWhere.trim() || null }); }}>
          <input type="text" placeholder="tag or tag:value" value={draftTag} onInput={(e) => setDraftTag((e.target as HTMLInputElement).value)} aria-label="Tag filter" />
          <input type="text" placeholder="compute target" value={draftTarget} onInput={(e) => setDraftTarget((e.target as HTMLInputElement).value)} aria-label="Compute target filter" />
          <input type="text" placeholder="metric: loss<0.5, acc>=0.9" value={draftWhere} onInput={(e) => setDraftWhere((e.target as HTMLInputElement).value)} aria-label="Metric filter" title="Runs whose metrics' last values compare so (<, <=, >, >=, =); several separated by commas" />
          <button class="btn" type="submit">Filter</button>
        </form>
        <label class="check-label">
          <input type="checkbox" checked={filters.children} onChange={(e) => setQuery({ children: (e.target as HTMLInputElement).checked ? "1" : null })} />
          Child runs as rows
        </label>
        <details class="chooser">
          <summary class="btn">Metric columns{columns.length ? ` (${columns.length})` : ""}</summary>
          <div class="chooser-menu">
            {names.length === 0 && <div class="muted">No metrics found in these runs yet.</div>}
            {names.length > 12 && (
              <input type="search" placeholder={`Search ${plural(names.length, "metric")}`} value={nameFilter}
                     onInput={(e) => setNameFilter((e.target as HTMLInputElement).value)} aria-label="Search metrics" />
            )}
            {shownNames.map((m) => (
              <label key={m} class="check-label">
                <input type="checkbox" checked={columns.includes(m)} disabled={!columns.includes(m) && columns.length >= MAX_SUMMARY_METRICS} onChange={() => toggleColumn(m)} />
                <span class="mono">{m}</span>
              </label>
            ))}
            {matchingNames.length > shownNames.length && (
              <div class="muted">{plural(matchingNames.length - shownNames.length, "more metric")}: search to narrow.</div>
            )}
            {names.length > 0 && <div class="muted">{namesNote} · up to {MAX_SUMMARY_METRICS} columns</div>}
            {names.length > 0 && (
              <div class="chooser-stat">
                Show
                {(["last", "min", "max"] as Stat[]).map((s) => (
                  <label key={s} class="check-label">
                    <input type="radio" name="stat" checked={stat === s} onChange={() => setQuery({ stat: s === "last" ? null : s })} />
                    {s}
                  </label>
                ))}
              </div>
            )}
          </div>
        </details>
      </div>

      <ErrorBanner error={error} />
      {loading && runs.length === 0 && <Spinner />}
      {!loading && !error && runs.length === 0 && (
        <Empty title="No runs match">
          {filters.status || filters.tag || filters.target || filters.where ? "Clear the filters to see every run of this experiment." : "This experiment has no runs yet."}
        </Empty>
      )}
      {runs.length > 0 && (
        <RunsTable
          runs={runs}
          now={now}
          metrics={columns}
          stat={stat}
          values={values}
          selected={selected}
          onSelect={(id, on) => setSelected((s) => { const n = new Set(s); on ? n.add(id) : n.delete(id); return n; })}
          onSelectAll={(on) => setSelected(on ? new Set(runs.map((r) => r.run_id)) : new Set())}
          sort={filters.sort}
          order={filters.order}
          onSort={onSort}
          expanded={filters.children ? undefined : expanded}
          onExpand={filters.children ? undefined : toggleExpand}
          children={kids}
        />
      )}
      {cursor && (
        <div class="more">
          <button class="btn" disabled={loading} onClick={loadMore}>{loading ? "Loading…" : `Load ${PAGE} more`}</button>
        </div>
      )}

      <Card
        title={selectedRuns.length ? `Compare ${plural(selectedRuns.length, "run")}` : "Compare runs"}
        actions={selectedRuns.length > 0 && <button class="btn btn-small" onClick={() => setSelected(new Set())}>Clear selection</button>}
        class="compare"
      >
        {selectedRuns.length === 0 ? (
          <div class="muted">Tick runs in the table to overlay one of their metrics here.</div>
        ) : names.length === 0 ? (
          <div class="muted">The selected runs have no metrics yet.</div>
        ) : (
          <>
            <div class="compare-bar">
              <label>
                Metric
                <select value={metric} onChange={(e) => setOverlayMetric((e.target as HTMLSelectElement).value)}>
                  {names.map((m) => <option key={m} value={m}>{m}</option>)}
                </select>
              </label>
              <ChartToolbar settings={settings} onChange={changeSettings} />
            </div>
            <OverlayChart
              runs={selectedRuns.map((r) => ({ run_id: r.run_id, label: r.display_name ?? r.run_id }))}
              metric={metric}
              settings={settings}
            />
            {columns.filter((c) => c !== metric).length > 0 && (
              <div class="chart-grid">
                {columns.filter((c) => c !== metric).map((c) => (
                  <Lazy key={c} height={260}>
                    <OverlayChart
                      runs={selectedRuns.map((r) => ({ run_id: r.run_id, label: r.display_name ?? r.run_id }))}
                      metric={c}
                      settings={settings}
                      height={220}
                    />
                  </Lazy>
                ))}
              </div>
            )}
          </>
        )}
      </Card>
    </div>
  );
}
