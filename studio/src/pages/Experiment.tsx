// The experiment dashboard: its runs (filtered, sorted, paged by cursor, live statuses),
// metric columns, and the metrics of selected runs overlaid.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { enc, getJSON, qs, STATUSES, TERMINAL, type MetricsDoc, type RunPage, type RunSummary } from "../lib/api";
import { useInterval, useNow, useTitle } from "../lib/hooks";
import { summarize, type Summary } from "../lib/metrics";
import { metricIndex } from "../lib/metricIndex";
import { setQuery, useLocation } from "../lib/router";
import { Card, Empty, ErrorBanner, Spinner } from "../components/ui";
import { ChartToolbar, loadSettings, saveSettings, type ChartSettings } from "../chart/Chart";
import { OverlayChart, pool } from "../chart/OverlayChart";
import { RunsTable, type Stat } from "./runs";
import { plural } from "../lib/format";

const PAGE = 100;
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
  children: boolean;
  sort: string;
  order: "asc" | "desc";
}

function runsUrl(name: string, f: Filters, cursor?: string | null): string {
  return `/v1/runs${qs({
    experiment: name,
    workspace: f.workspace,
    status: f.status === "active" ? ACTIVE.join(",") : f.status,
    tag: f.tag.trim() || undefined,
    compute_target: f.target.trim() || undefined,
    top_level: f.children ? undefined : "true",
    order_by: f.sort === "created_at" ? undefined : f.sort,
    order: f.order === "desc" ? undefined : "asc",
    limit: PAGE,
    cursor,
  })}`;
}

/** last/min/max of the named metrics of each run (a few runs at a time): from each run's
 * metric index when the API has it, else from those metrics' values. */
async function metricValues(runIds: string[], names: string[]): Promise<[string, Record<string, Summary | null>][]> {
  return pool(
    runIds.map((id) => async () => {
      const out: Record<string, Summary | null> = {};
      try {
        const index = await metricIndex(id);
        if (index.indexed) {
          for (const e of index.metrics) {
            if (names.includes(e.name) && e.kind !== "table" && e.kind !== "list")
              out[e.name] = { last: e.last ?? null, min: e.min ?? null, max: e.max ?? null, count: e.count };
          }
        } else {
          const doc = await getJSON<MetricsDoc>(`/v1/runs/${enc(id)}/metrics${qs({ name: names })}`);
          for (const [k, v] of Object.entries(doc.metrics)) out[k] = summarize(v);
        }
      } catch {
        /* shown as — */
      }
      for (const n of names) if (!(n in out)) out[n] = null;
      return [id, out] as [string, Record<string, Summary | null>];
    }),
    6,
  );
}

export function ExperimentPage({ name }: { name: string }) {
  const { query } = useLocation();
  useTitle(name);
  const filters: Filters = {
    workspace: query.get("workspace"),
    status: query.get("status") ?? "",
    tag: query.get("tag") ?? "",
    target: query.get("target") ?? "",
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
  const [values, setValues] = useState(new Map<string, Record<string, Summary | null>>());
  const [selected, setSelected] = useState(new Set<string>());
  const [expanded, setExpanded] = useState(new Set<string>());
  const [kids, setKids] = useState(new Map<string, RunSummary[] | "loading" | Error>());
  const [overlayMetric, setOverlayMetric] = useState<string>("");
  const [settings, setSettings] = useState<ChartSettings>(loadSettings);
  const [draftTag, setDraftTag] = useState(filters.tag);
  const [draftTarget, setDraftTarget] = useState(filters.target);
  const now = useNow(1000);
  const discovered = useRef(new Set<string>());

  // First page on load and whenever the filters change.
  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    setError(null);
    getJSON<RunPage>(runsUrl(name, filters))
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
  }, [name, filterKey]);

  // Metric names: from the metrics of the first few runs (and every selected one).
  useEffect(() => {
    const children: string[] = [];
    kids.forEach((k) => Array.isArray(k) && k.slice(0, 5).forEach((c) => children.push(c.run_id)));
    const probe = [...runs.slice(0, 5).map((r) => r.run_id), ...children, ...selected].filter((id) => !discovered.current.has(id));
    if (probe.length === 0) return;
    probe.forEach((id) => discovered.current.add(id));
    void pool(probe.map((id) => () => metricIndex(id).catch(() => null)), 4).then((docs) => {
      const found = new Set<string>();
      docs.forEach((d) => d?.metrics.forEach((e) => e.kind !== "table" && e.kind !== "list" && found.add(e.name)));
      setNames((old) => [...new Set([...old, ...found])].sort());
    });
  }, [runs, selected, kids]);

  // Values of the chosen metric columns for every run shown (children included).
  const shownIds = useMemo(() => {
    const ids = runs.map((r) => r.run_id);
    kids.forEach((k) => Array.isArray(k) && k.forEach((c) => ids.push(c.run_id)));
    return ids;
  }, [runs, kids]);
  const columnsKey = columns.join(",");
  const fetched = useRef(new Map<string, Set<string>>());
  const valuesReadAt = useRef(Date.now());
  useEffect(() => {
    if (columns.length === 0) return;
    const missing = shownIds.filter((id) => columns.some((c) => !fetched.current.get(id)?.has(c)));
    if (missing.length === 0) return;
    missing.forEach((id) => {
      const set = fetched.current.get(id) ?? new Set<string>();
      columns.forEach((c) => set.add(c));
      fetched.current.set(id, set);
    });
    void metricValues(missing, columns).then((pairs) =>
      setValues((old) => {
        const next = new Map(old);
        for (const [id, m] of pairs) next.set(id, { ...(next.get(id) ?? {}), ...m });
        return next;
      }),
    );
  }, [shownIds, columnsKey, values]);

  // Live: re-read the first page and the active runs every few seconds while any is active.
  const anyActive = runs.some((r) => !TERMINAL.has(r.status));
  useInterval(async () => {
    try {
      const [page, active] = await Promise.all([
        getJSON<RunPage>(runsUrl(name, filters)),
        getJSON<RunPage>(`/v1/runs${qs({ experiment: name, workspace: filters.workspace, status: ACTIVE.join(","), limit: 1000 })}`),
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
      // Metric values of active runs change too: re-read them every 10 s at most.
      if (Date.now() - valuesReadAt.current > 10_000) {
        valuesReadAt.current = Date.now();
        runs.forEach((r) => !TERMINAL.has(r.status) && fetched.current.delete(r.run_id));
        setValues((old) => new Map(old));
      }
    } catch {
      /* the next tick retries; the banner is for the first load */
    }
  }, anyActive ? 2000 : 15000);

  const loadMore = async () => {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await getJSON<RunPage>(runsUrl(name, filters, cursor));
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
        getJSON<RunPage>(`/v1/runs/${enc(runId)}/children${qs({ limit: 1000 })}`)
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
        <form class="inline-form" onSubmit={(e) => { e.preventDefault(); setQuery({ tag: draftTag.trim() || null, target: draftTarget.trim() || null }); }}>
          <input type="text" placeholder="tag or tag:value" value={draftTag} onInput={(e) => setDraftTag((e.target as HTMLInputElement).value)} aria-label="Tag filter" />
          <input type="text" placeholder="compute target" value={draftTarget} onInput={(e) => setDraftTarget((e.target as HTMLInputElement).value)} aria-label="Compute target filter" />
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
            {names.map((m) => (
              <label key={m} class="check-label">
                <input type="checkbox" checked={columns.includes(m)} onChange={() => toggleColumn(m)} />
                <span class="mono">{m}</span>
              </label>
            ))}
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
          {filters.status || filters.tag || filters.target ? "Clear the filters to see every run of this experiment." : "This experiment has no runs yet."}
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
          </>
        )}
      </Card>
    </div>
  );
}
