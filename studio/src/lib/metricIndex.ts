// What a run logged, per metric name, without its points: the kind (how to chart it), how
// many values, and the last/min/max. Read from GET /v1/runs/{id}/metric-index when the API
// has it; else derived from the whole metrics dict (GET /v1/runs/{id}/metrics), which
// carries every point of every series (slow for runs with millions of points).
import { ApiError, enc, getJSON, type MetricsDoc, type MetricValue, type TypedMetric, type Value } from "./api";
import { isTable, summarize } from "./metrics";

export type IndexKind = "series" | "list" | "table" | "value" | "list_or_series";

export interface IndexEntry {
  name: string;
  kind: IndexKind;
  count: number;
  last?: Value;
  min?: number | null;
  max?: number | null;
  /** Only when derived from the metrics dict: the values themselves. */
  values?: MetricValue;
}

export interface MetricIndex {
  metrics: IndexEntry[];
  typed: Record<string, TypedMetric>;
  /** true: from /metric-index (lists and tables must be read by name). */
  indexed: boolean;
}

let indexRoute: boolean | undefined;

export function fromMetricsDoc(doc: MetricsDoc): MetricIndex {
  const metrics = Object.entries(doc.metrics).map(([name, v]): IndexEntry => {
    const s = summarize(v);
    if (Array.isArray(v)) return { name, kind: "list_or_series", count: v.length, last: s?.last, min: s?.min, max: s?.max, values: v };
    if (isTable(v)) {
      const height = Math.max(0, ...Object.values(v).map((c) => c.length));
      return { name, kind: "table", count: height, values: v };
    }
    return { name, kind: "value", count: 1, last: v as Value, min: s?.min, max: s?.max, values: v };
  });
  return { metrics, typed: doc.typed ?? {}, indexed: false };
}

export async function metricIndex(runId: string, signal?: AbortSignal): Promise<MetricIndex> {
  if (indexRoute !== false) {
    try {
      const doc = await getJSON<{ metrics: IndexEntry[]; typed?: Record<string, TypedMetric> }>(
        `/v1/runs/${enc(runId)}/metric-index`, signal);
      indexRoute = true;
      return { metrics: doc.metrics, typed: doc.typed ?? {}, indexed: true };
    } catch (err) {
      // 404 for a run that exists: this API has no index route yet.
      const routeMissing = err instanceof ApiError && (err.status === 404 || err.status === 405) && !/no run/i.test(err.message);
      if (!routeMissing || indexRoute === true) throw err;
      indexRoute = false;
    }
  }
  return fromMetricsDoc(await getJSON<MetricsDoc>(`/v1/runs/${enc(runId)}/metrics`, signal));
}
