// The metrics dict (GET /v1/runs/{id}/metrics, shaped like run.get_metrics()): what kind
// of chart each value calls for (the product page's table), and summaries for run tables.
import type { MetricSummary, MetricValue, Value } from "./api";
import { isSpelledString, numeric } from "./format";

export type MetricKind = "value" | "list" | "table";

/** A table ({column: [values]}): an object that is not a spelled string ({"str": "NaN"}). */
export function isTable(value: MetricValue | undefined): value is Record<string, Value[]> {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !isSpelledString(value);
}

export function kindOf(value: MetricValue): MetricKind {
  if (Array.isArray(value)) return "list";
  if (isTable(value)) return "table";
  return "value";
}

export interface Summary {
  last: Value;
  min: number | null;
  max: number | null;
  count: number;
}

/** A run list's summary of a series (?metric=) as a table cell's Summary. */
export function fromApiSummary(s: MetricSummary | undefined): Summary | null {
  if (!s) return null;
  const n = (v: number | string | null) => (typeof v === "number" ? v : null);
  return { last: s.last, min: n(s.min), max: n(s.max), count: s.count };
}

/** last / min / max of a value or a list (a series in step order: its last is the latest). */
export function summarize(value: MetricValue | undefined): Summary | null {
  if (value === undefined) return null;
  if (Array.isArray(value)) {
    if (value.length === 0) return null;
    let min: number | null = null;
    let max: number | null = null;
    for (const v of value) {
      const n = numeric(v);
      if (n === null) continue;
      if (min === null || n < min) min = n;
      if (max === null || n > max) max = n;
    }
    return { last: value[value.length - 1], min, max, count: value.length };
  }
  if (isTable(value)) return null;
  const n = numeric(value);
  return { last: value, min: n, max: n, count: 1 };
}

/** A table's numeric columns other than the first (the first is x). */
export function tableColumns(table: Record<string, Value[]>): { x: string; ys: string[] } | null {
  const names = Object.keys(table);
  if (names.length < 2) return null;
  const [x, ...rest] = names;
  const ys = rest.filter((c) => table[c].some((v) => numeric(v) !== null));
  return { x, ys };
}
