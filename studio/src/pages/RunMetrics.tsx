// A run's metrics, charted the way the product page's table says: a series from repeated
// log → line over step (or time), log_list → line over index, log_row/log_table → line with
// the first column on x, single values and strings → a table, log_image → each image with
// its steps (a slider over them).
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { enc, getJSON, qs, type MetricsDoc, type RunDetails, type RunFile, type Value } from "../lib/api";
import { imageSeries } from "../lib/images";
import { metricIndex, type IndexEntry } from "../lib/metricIndex";
import { useAsync, useInterval } from "../lib/hooks";
import { formatValue, valueType } from "../lib/format";
import { isTable, tableColumns } from "../lib/metrics";
import { Card, Empty, ErrorBanner, Spinner, Table } from "../components/ui";
import { Chart, ChartToolbar, loadSettings, saveSettings, type ChartSettings } from "../chart/Chart";
import { Lazy } from "../chart/Lazy";
import { SeriesChart, type PointHub } from "../chart/SeriesChart";
import { numeric } from "../lib/format";
import { listLine, type Line } from "../chart/series";
import { TypedMetricChart } from "../chart/TypedCharts";
import { ImageSteps } from "./RunImages";

/** Typed metrics drawn across the whole width (two plots, or a heatmap with its scores). */
const WIDE = new Set(["confusion_matrix", "accuracy_table"]);

function TableChart({ name, table, settings }: { name: string; table: Record<string, Value[]>; settings: ChartSettings }) {
  const cols = tableColumns(table);
  const [showRows, setShowRows] = useState(false);
  const lines = useMemo<Line[]>(() => {
    if (!cols) return [];
    const xs = table[cols.x].map((v) => numeric(v));
    return cols.ys.map((c) => {
      const rows = xs
        .map((x, i) => [x, numeric(table[c][i])] as const)
        .filter((r): r is readonly [number, number | null] => r[0] !== null)
        .sort((a, b) => a[0] - b[0]);
      return { label: c, x: rows.map((r) => r[0]), y: rows.map((r) => r[1]) };
    });
  }, [table]);
  const columns = Object.keys(table);
  const height = Math.max(0, ...columns.map((c) => table[c].length));
  const numericX = cols && table[cols.x].some((v) => numeric(v) !== null);
  return (
    <div class="table-metric">
      {cols && numericX && lines.length > 0 ? (
        <Chart
          title={name}
          lines={lines}
          settings={{ ...settings, xMode: "step", smoothing: 0 }}
          xLabel={cols.x}
          badge={<span class="badge" title={`x = ${cols.x}`}>table · x = {cols.x}</span>}
        />
      ) : (
        <div class="chart-head"><span class="chart-title">{name}</span><span class="badge">table</span></div>
      )}
      <button class="btn btn-tiny" onClick={() => setShowRows(!showRows)}>
        {showRows ? "Hide rows" : `Show ${height} row${height === 1 ? "" : "s"}`}
      </button>
      {showRows && (
        <Table class="compact">
          <thead><tr>{columns.map((c) => <th key={c}>{c}</th>)}</tr></thead>
          <tbody>
            {Array.from({ length: Math.min(height, 1000) }, (_, i) => (
              <tr key={i}>{columns.map((c) => <td key={c} class="mono">{formatValue(table[c][i])}</td>)}</tr>
            ))}
          </tbody>
        </Table>
      )}
    </div>
  );
}

export function RunMetrics({ run, hub, liveNames, live }: { run: RunDetails; hub: PointHub; liveNames: Set<string>; live: boolean }) {
  const index = useAsync((signal) => metricIndex(run.run_id, signal), [run.run_id]);
  const files = useAsync((signal) => getJSON<{ files: RunFile[] }>(`/v1/runs/${enc(run.run_id)}/files`, signal), [run.run_id]);
  const [settings, setSettings] = useState<ChartSettings>(loadSettings);
  const [filter, setFilter] = useState("");
  const entries = index.data?.metrics ?? [];

  // With the index, the values of lists and tables are read by name (they are small).
  const byName = index.data?.indexed ? entries.filter((e) => e.kind === "list" || e.kind === "table").map((e) => e.name) : [];
  const extra = useAsync(async (signal) => {
    if (byName.length === 0) return {} as MetricsDoc["metrics"];
    return (await getJSON<MetricsDoc>(`/v1/runs/${enc(run.run_id)}/metrics${qs({ name: byName })}`, signal)).metrics;
  }, [run.run_id, byName.join("\u0000")]);
  const valuesOf = (e: IndexEntry) => e.values ?? extra.data?.[e.name];

  // New metric names seen live, values of a run that just ended: re-read the index.
  const seriesNames = new Set(entries.filter((e) => e.kind === "series" || e.kind === "list_or_series").map((e) => e.name));
  const unknownLive = [...liveNames].some((n) => !seriesNames.has(n));
  const lastReload = useRef(0);
  useEffect(() => {
    if (!unknownLive || index.loading) return;
    const wait = Math.max(0, lastReload.current + 2000 - Date.now());
    const t = window.setTimeout(() => {
      lastReload.current = Date.now();
      index.reload();
    }, wait);
    return () => window.clearTimeout(t);
  }, [unknownLive, liveNames.size, index.loading]);
  // Images logged while the run is live: the file list is re-read now and then.
  useInterval(() => {
    if (!files.loading) files.reload();
  }, live ? 5000 : null);
  const wasLive = useRef(live);
  useEffect(() => {
    if (wasLive.current && !live) {
      index.reload();
      files.reload();
    }
    wasLive.current = live;
  }, [live]);

  const change = (s: ChartSettings) => {
    setSettings(s);
    saveSettings(s);
  };

  if (index.error && !index.data) return <ErrorBanner error={index.error} onRetry={index.reload} />;
  if (!index.data) return <Spinner />;

  const needle = filter.trim().toLowerCase();
  const shown = entries.filter((e) => !needle || e.name.toLowerCase().includes(needle)).sort((a, b) => a.name.localeCompare(b.name));
  const series = shown.filter((e) => e.kind === "series" || e.kind === "list_or_series" || e.kind === "list");
  const tables = shown.filter((e) => e.kind === "table");
  const values = shown.filter((e) => e.kind === "value");
  // Typed metrics: the wide charts (a row each) first, so the others pair up below.
  const typed = Object.entries(index.data.typed)
    .filter(([name]) => !needle || name.toLowerCase().includes(needle))
    .sort(([a, ta], [b, tb]) => Number(WIDE.has(tb.schema_type)) - Number(WIDE.has(ta.schema_type)) || a.localeCompare(b));
  const images = imageSeries(files.data?.files ?? []).filter((s) => !needle || s.name.toLowerCase().includes(needle));
  const imageSteps = images.reduce((n, s) => n + s.steps.length, 0);
  const total = entries.length + Object.keys(index.data.typed).length;

  if (total === 0 && images.length === 0 && typed.length === 0) {
    return (
      <Empty title="No metrics logged yet">
        {live ? "This run is live: metrics appear here as they are logged." : "Log with run.log(name, value), run.log_list, run.log_row, run.log_table or run.log_image."}
      </Empty>
    );
  }

  return (
    <div class="metrics">
      <div class="metrics-bar">
        <ChartToolbar settings={settings} onChange={change} />
        {total > 6 && (
          <input class="search" type="search" placeholder="Filter metrics…" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} aria-label="Filter metrics" />
        )}
      </div>
      <ErrorBanner error={extra.error} />
      {series.length > 0 && (
        <div class="chart-grid">
          {series.map((e) => (
            <Lazy key={e.name} height={300}>
              {e.kind === "list" ? (
                <Chart
                  title={e.name}
                  lines={Array.isArray(valuesOf(e)) ? [listLine(e.name, valuesOf(e) as Value[])] : []}
                  settings={{ ...settings, xMode: "step" }}
                  xLabel="index"
                  badge={<span class="badge" title="Logged with log_list: values against their index">list</span>}
                />
              ) : (
                <SeriesChart runId={run.run_id} name={e.name} settings={settings} hub={hub} listValues={Array.isArray(e.values) ? e.values : undefined} />
              )}
            </Lazy>
          ))}
        </div>
      )}
      {tables.length > 0 && (
        <div class="chart-grid">
          {tables.map((e) => {
            const table = valuesOf(e);
            return (
              <Lazy key={e.name} height={300}>
                {isTable(table) ? (
                  <TableChart name={e.name} table={table} settings={settings} />
                ) : (
                  <div class="chart"><div class="chart-head"><span class="chart-title">{e.name}</span></div><Spinner /></div>
                )}
              </Lazy>
            );
          })}
        </div>
      )}
      {typed.length > 0 && (
        <div class="chart-grid typed-grid">
          {typed.map(([name, t]) => (
            <Lazy key={name} height={360} class={WIDE.has(t.schema_type) ? "chart-wide" : undefined}>
              <TypedMetricChart runId={run.run_id} name={name} meta={t} />
            </Lazy>
          ))}
        </div>
      )}
      {values.length > 0 && (
        <Card title="Values">
          <Table class="compact">
            <thead><tr><th>Name</th><th>Value</th><th>Type</th></tr></thead>
            <tbody>
              {values.map((e) => (
                <tr key={e.name}>
                  <td class="mono">{e.name}</td>
                  <td class="mono wrap">{formatValue(e.last)}</td>
                  <td class="muted">{valueType(e.last)}</td>
                </tr>
              ))}
            </tbody>
          </Table>
        </Card>
      )}
      {images.length > 0 && (
        <Card title={`Images (${images.length}${imageSteps > images.length ? `, ${imageSteps} steps` : ""})`}>
          <div class="image-grid">
            {images.map((s) => <ImageSteps key={s.name} runId={run.run_id} series={s} />)}
          </div>
        </Card>
      )}
    </div>
  );
}
