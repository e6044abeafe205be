// A run's child runs: the table (live statuses) and one metric of them overlaid.
import { useEffect, useMemo, useState } from "preact/hooks";
import { enc, getJSON, qs, TERMINAL, type MetricsDoc, type MetricValue, type RunDetails, type RunPage, type RunSummary } from "../lib/api";
import { useInterval, useNow } from "../lib/hooks";
import { kindOf, summarize, type Summary } from "../lib/metrics";
import { Card, ErrorBanner, Spinner } from "../components/ui";
import { Chart, ChartToolbar, loadSettings, saveSettings, type ChartSettings } from "../chart/Chart";
import { numeric } from "../lib/format";
import type { Line } from "../chart/series";
import { OverlayChart, pool } from "../chart/OverlayChart";
import { RunsTable } from "./runs";

export function RunChildren({ run }: { run: RunDetails }) {
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [metrics, setMetrics] = useState(new Map<string, Record<string, MetricValue>>());
  const [chosen, setChosen] = useState("");
  const [settings, setSettings] = useState<ChartSettings>(loadSettings);
  const now = useNow(1000);
  const load = async (after: string | null = null) => {
    try {
      const page = await getJSON<RunPage>(`/v1/runs/${enc(run.run_id)}/children${qs({ limit: 500, cursor: after })}`);
      setRuns((old) => (after && old ? [...old, ...page.runs] : page.runs));
      setCursor(page.next_cursor);
    } catch (err) {
      setError(err as Error);
    }
  };
  useEffect(() => {
    void load();
  }, [run.run_id, run.children.length]);
  useInterval(() => void load(), runs?.some((r) => !TERMINAL.has(r.status)) ? 4000 : null);

  // Every child's metrics (for the chooser and the value columns).
  const ids = (runs ?? []).map((r) => r.run_id).join(",");
  useEffect(() => {
    if (!runs || runs.length === 0) return;
    const todo = runs.filter((r) => !metrics.has(r.run_id) || !TERMINAL.has(r.status)).slice(0, 200);
    if (todo.length === 0) return;
    void pool(todo.map((r) => () => getJSON<MetricsDoc>(`/v1/runs/${enc(r.run_id)}/metrics`).then((d) => [r.run_id, d.metrics] as const).catch(() => [r.run_id, {}] as const)), 6).then((pairs) =>
      setMetrics((old) => {
        const next = new Map(old);
        pairs.forEach(([id, m]) => next.set(id, m));
        return next;
      }),
    );
  }, [ids, runs?.map((r) => r.status).join(",")]);

  const names = useMemo(() => {
    const found = new Set<string>();
    metrics.forEach((m) => Object.entries(m).forEach(([k, v]) => kindOf(v) !== "table" && found.add(k)));
    return [...found].sort();
  }, [metrics]);
  const summaries = useMemo(() => {
    const out = new Map<string, Record<string, Summary | null>>();
    metrics.forEach((m, id) => {
      const row: Record<string, Summary | null> = {};
      for (const n of names) row[n] = summarize(m[n]);
      out.set(id, row);
    });
    return out;
  }, [metrics, names]);
  const seriesNames = useMemo(() => names.filter((n) => [...metrics.values()].some((m) => Array.isArray(m[n]))), [names, metrics]);
  const metric = chosen || seriesNames[0] || "";
  // Values logged once per child (a sweep's alpha and mse): one against another.
  const scalarNames = useMemo(
    () => names.filter((n) => [...metrics.values()].some((m) => typeof m[n] === "number") && ![...metrics.values()].some((m) => Array.isArray(m[n]))),
    [names, metrics],
  );
  const [xName, setXName] = useState("");
  const [yName, setYName] = useState("");
  const sx = scalarNames.includes(xName) ? xName : scalarNames[0] ?? "";
  const sy = scalarNames.includes(yName) ? yName : scalarNames.find((n) => n !== sx) ?? sx;
  const scalarLine = useMemo<Line[]>(() => {
    if (!sx || !sy) return [];
    const rows: [number, number][] = [];
    metrics.forEach((m) => {
      const x = numeric(m[sx] as number);
      const y = numeric(m[sy] as number);
      if (x !== null && y !== null) rows.push([x, y]);
    });
    rows.sort((a, b) => a[0] - b[0]);
    return [{ label: sy, x: rows.map((r) => r[0]), y: rows.map((r) => r[1]) }];
  }, [metrics, sx, sy]);

  if (error && !runs) return <ErrorBanner error={error} />;
  if (!runs) return <Spinner />;
  return (
    <div class="children">
      <RunsTable runs={runs} now={now} metrics={names.slice(0, 8)} values={summaries} />
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
