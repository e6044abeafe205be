// A run's child runs: the table (live statuses) and one metric of them overlaid.
import { useEffect, useMemo, useState } from "preact/hooks";
import { enc, getJSON, MAX_SUMMARY_METRICS, qs, TERMINAL, type MetricName, type MetricNamesDoc, type RunDetails, type RunPage, type RunSummary } from "../lib/api";
import { useInterval, useNow } from "../lib/hooks";
import { fromApiSummary, type Summary } from "../lib/metrics";
import { Card, ErrorBanner, Spinner } from "../components/ui";
import { Chart, ChartToolbar, loadSettings, saveSettings, type ChartSettings } from "../chart/Chart";
import { numeric } from "../lib/format";
import type { Line } from "../chart/series";
import { OverlayChart } from "../chart/OverlayChart";
import { RunsTable } from "./runs";

/** Names whose summaries the table and charts use: the API's limit per request, twice. */
const SUMMARY_NAMES = 2 * MAX_SUMMARY_METRICS;

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export function RunChildren({ run }: { run: RunDetails }) {
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [names, setNames] = useState<MetricName[]>([]);
  const [chosen, setChosen] = useState("");
  const [settings, setSettings] = useState<ChartSettings>(loadSettings);
  const now = useNow(1000);
  // The children's metric names (one request), then their summaries with the run list.
  useEffect(() => {
    getJSON<MetricNamesDoc>(`/v1/metric-names${qs({ parent_run_id: run.run_id, runs: 5000 })}`)
      .then((doc) => setNames(doc.names.filter((n) => n.kinds.includes("series"))))
      .catch(() => setNames([]));
  }, [run.run_id, run.children.length]);
  const asked = names.slice(0, SUMMARY_NAMES).map((n) => n.name);
  const askedKey = asked.join("\n");
  const load = async (after: string | null = null) => {
    try {
      const pages = await Promise.all(
        (asked.length ? chunk(asked, MAX_SUMMARY_METRICS) : [[]]).map((metric) =>
          getJSON<RunPage>(`/v1/runs/${enc(run.run_id)}/children${qs({ limit: 500, cursor: after, metric })}`)),
      );
      const page = pages[0];
      // The same runs in every answer: merge their summaries.
      page.runs.forEach((r, i) => {
        r.metrics = Object.assign({}, ...pages.map((p) => p.runs[i]?.run_id === r.run_id ? p.runs[i].metrics ?? {} : {}));
      });
      setRuns((old) => (after && old ? [...old, ...page.runs] : page.runs));
      setCursor(page.next_cursor);
    } catch (err) {
      setError(err as Error);
    }
  };
  useEffect(() => {
    void load();
  }, [run.run_id, run.children.length, askedKey]);
  useInterval(() => void load(), runs?.some((r) => !TERMINAL.has(r.status)) ? 4000 : null);

  const summaries = useMemo(() => {
    const out = new Map<string, Record<string, Summary | null>>();
    (runs ?? []).forEach((r) => {
      const row: Record<string, Summary | null> = {};
      for (const n of asked) row[n] = fromApiSummary(r.metrics?.[n]);
      out.set(r.run_id, row);
    });
    return out;
  }, [runs, askedKey]);
  // A series in some child (a line to overlay) or a value logged once by each (a sweep's
  // alpha and mse: one against another).
  const kinds = useMemo(() => {
    const out = new Map<string, Set<string>>();
    (runs ?? []).forEach((r) => Object.entries(r.metrics ?? {}).forEach(([n, m]) => {
      if (!out.has(n)) out.set(n, new Set());
      out.get(n)!.add(m.kind);
    }));
    return out;
  }, [runs]);
  const seriesNames = useMemo(() => {
    const repeated = names.map((n) => n.name).filter((n) => !kinds.has(n) || kinds.get(n)!.has("series"));
    return repeated.length ? repeated : names.map((n) => n.name);
  }, [names, kinds]);
  const metric = chosen || seriesNames[0] || "";
  const scalarNames = useMemo(() => asked.filter((n) => kinds.get(n)?.size === 1 && kinds.get(n)!.has("value")), [askedKey, kinds]);
  const [xName, setXName] = useState("");
  const [yName, setYName] = useState("");
  const sx = scalarNames.includes(xName) ? xName : scalarNames[0] ?? "";
  const sy = scalarNames.includes(yName) ? yName : scalarNames.find((n) => n !== sx) ?? sx;
  const scalarLine = useMemo<Line[]>(() => {
    if (!sx || !sy) return [];
    const rows: [number, number][] = [];
    (runs ?? []).forEach((r) => {
      const x = numeric(r.metrics?.[sx]?.last);
      const y = numeric(r.metrics?.[sy]?.last);
      if (x !== null && y !== null) rows.push([x, y]);
    });
    rows.sort((a, b) => a[0] - b[0]);
    return [{ label: sy, x: rows.map((r) => r[0]), y: rows.map((r) => r[1]) }];
  }, [runs, sx, sy]);

  if (error && !runs) return <ErrorBanner error={error} />;
  if (!runs) return <Spinner />;
  return (
    <div class="children">
      <RunsTable runs={runs} now={now} metrics={asked.slice(0, 8)} values={summaries} />
      {cursor && <div class="more"><button class="btn" onClick={() => load(cursor)}>Load more</button></div>}
      {seriesNames.length > 0 && (
        <Card title="Child runs overlaid">
          <div class="compare-bar">
            <label>
              Metric
              <select value={metric} onChange={(e) => setChosen((e.target as HTMLSelectElement).value)}>
                {seriesNames.map((m) => <option key={m} value={m}>{m}</option>)}
              </select>
            </label>
            <ChartToolbar settings={settings} onChange={(s) => { setSettings(s); saveSettings(s); }} />
          </div>
          <OverlayChart runs={runs.slice(0, 100).map((r) => ({ run_id: r.run_id, label: r.display_name ?? r.run_id }))} metric={metric} settings={settings} />
        </Card>
      )}
      {scalarNames.length >= 2 && (
        <Card title="Child runs: one value against another">
          <div class="compare-bar">
            <label>
              x
              <select value={sx} onChange={(e) => setXName((e.target as HTMLSelectElement).value)}>
                {scalarNames.map((m) => <option key={m} value={m}>{m}</option>)}
              </select>
            </label>
            <label>
              y
              <select value={sy} onChange={(e) => setYName((e.target as HTMLSelectElement).value)}>
                {scalarNames.map((m) => <option key={m} value={m}>{m}</option>)}
              </select>
            </label>
          </div>
          <Chart title={`${sy} vs ${sx}`} xLabel={sx} lines={scalarLine} settings={{ ...settings, xMode: "step", smoothing: 0 }} />
        </Card>
      )}
    </div>
  );
}
