// One metric of several runs on one chart (selected runs, or a run's children).
import { useEffect, useMemo, useState } from "preact/hooks";
import { seriesOfRuns, type SeriesDoc } from "../lib/api";
import { Chart, type ChartSettings } from "./Chart";
import { lastLine, type Line } from "./series";
import { MAX_POINTS } from "./SeriesChart";

export interface OverlayRun {
  run_id: string;
  label: string;
}

/** Run `tasks` with at most `limit` at a time. */
export async function pool<T>(tasks: (() => Promise<T>)[], limit = 6): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return out;
}

/** Points (or buckets) per run of an overlay: about 1,000 for a few runs; with many runs
 * first a coarse 150 each (the API answers those from its tiles), then a finer read. */
export function overlayPoints(runs: number): { first: number; refined: number | null } {
  const full = Math.min(MAX_POINTS, 1000);
  if (runs <= 10) return { first: full, refined: null };
  return { first: 150, refined: Math.max(300, Math.min(full, Math.round(40_000 / runs))) };
}

export function OverlayChart({ runs, metric, settings, height }: {
  runs: OverlayRun[];
  metric: string;
  settings: ChartSettings;
  height?: number;
}) {
  const [docs, setDocs] = useState<(SeriesDoc | null)[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const key = runs.map((r) => r.run_id).join(",");
  useEffect(() => {
    const abort = new AbortController();
    setDocs(null);
    setError(null);
    const ids = runs.map((r) => r.run_id);
    const { first, refined } = overlayPoints(ids.length);
    // One request for every run (GET /v1/series), not one per run; many runs: coarse, then fine.
    seriesOfRuns(ids, metric, first, abort.signal)
      .then(async (d) => {
        if (abort.signal.aborted) return;
        setDocs(d);
        if (refined === null) return;
        const fine = await seriesOfRuns(ids, metric, refined, abort.signal);
        if (abort.signal.aborted) return;
        setDocs(fine);
        performance.mark(`runstream:overlay-refined:${metric}`);
      })
      .catch((err: Error) => !abort.signal.aborted && err.name !== "AbortError" && setError(err.message));
    return () => abort.abort();
  }, [key, metric]);

  const lines = useMemo(() => {
    if (!docs) return [];
    const out: Line[] = [];
    docs.forEach((doc, i) => {
      if (doc) out.push(lastLine(doc, settings.xMode, runs[i].label));
    });
    return out;
  }, [docs, settings.xMode]);

  if (error) return <div class="banner banner-error">{error}</div>;
  if (!docs) return <div class="chart chart-placeholder"><div class="loading"><span class="spinner" />Loading {runs.length} runs…</div></div>;
  const missing = docs.filter((d) => d === null).length;
  return (
    <Chart
      title={metric}
      lines={lines}
      settings={settings}
      height={height ?? 300}
      badge={missing ? <span class="badge" title="These runs have no series of that name">{missing} without it</span> : undefined}
    />
  );
}
