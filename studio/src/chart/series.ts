// Turning API answers into chart columns: exact points, or the min/max/last buckets of a
// downsampled series; EMA smoothing; CSV.
import type { Bucket, Point, SeriesDoc, Value } from "../lib/api";
import { numeric, parseTime } from "../lib/format";

export type XMode = "step" | "relative" | "wall";

export interface Line {
  label: string;
  x: number[];
  y: (number | null)[];
  /** The min–max band of a downsampled series (same x as y). */
  band?: { min: (number | null)[]; max: (number | null)[] };
}

function statNumber(v: number | string | null): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** Seconds since the epoch with the microseconds the API gives (Date.parse keeps ms). */
export function epochSeconds(iso: string): number {
  const ms = parseTime(iso) ?? 0;
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? "";
  const micros = fraction.length > 3 ? Number(fraction.slice(3, 6).padEnd(3, "0")) : 0;
  return ms / 1000 + micros / 1e6;
}

/** x of a time for the chosen mode: seconds (wall: since epoch; relative: since origin).
 * `seconds` when the answer had them (format=columns), else the ISO text. */
function timeX(iso: string, mode: XMode, origin: number, seconds?: number): number {
  const t = seconds ?? epochSeconds(iso);
  return mode === "wall" ? t : t - origin;
}

export function originOf(doc: SeriesDoc): number {
  const p = doc.points?.[0];
  const b = doc.buckets?.[0];
  if (p) return p.t ?? (p.time ? epochSeconds(p.time) : 0);
  if (b) return b.t0 ?? (b.first_time ? epochSeconds(b.first_time) : 0);
  return 0;
}

/** Points of one rank sorted by x (uPlot needs x ascending). */
function pointsLine(label: string, points: Point[], mode: XMode, origin: number): Line {
  const rows = points.map((p) => [mode === "step" ? p.step : timeX(p.time, mode, origin, p.t), numeric(p.value)] as const);
  if (mode !== "step") rows.sort((a, b) => a[0] - b[0]);
  return { label, x: rows.map((r) => r[0]), y: rows.map((r) => r[1]) };
}

function bucketsLine(label: string, buckets: Bucket[], mode: XMode, origin: number): Line {
  const x: number[] = [];
  const y: (number | null)[] = [];
  const min: (number | null)[] = [];
  const max: (number | null)[] = [];
  for (const b of buckets) {
    const lo = statNumber(b.min);
    const hi = statNumber(b.max);
    const x0 = mode === "step" ? b.step_min : timeX(b.first_time, mode, origin, b.t0);
    const x1 = mode === "step" ? b.step_max : timeX(b.last_time, mode, origin, b.t1);
    // Each bucket spans [x0, x1]: the band covers all of it, the last value sits at x1.
    if (x1 > x0) {
      x.push(x0);
      y.push(null);
      min.push(lo);
      max.push(hi);
    }
    x.push(x1);
    y.push(numeric(b.last as Value));
    min.push(lo);
    max.push(hi);
  }
  if (mode !== "step") {
    const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b]);
    return {
      label,
      x: order.map((i) => x[i]),
      y: order.map((i) => y[i]),
      band: { min: order.map((i) => min[i]), max: order.map((i) => max[i]) },
    };
  }
  return { label, x, y, band: { min, max } };
}

/** The lines of one series answer: one per rank for exact points, one banded line else. */
export function linesOf(doc: SeriesDoc, mode: XMode, label = doc.name, origin = originOf(doc)): Line[] {
  if (doc.downsampled && doc.buckets) return [bucketsLine(label, doc.buckets, mode, origin)];
  const points = doc.points ?? [];
  const ranks = new Map<number, Point[]>();
  for (const p of points) {
    const list = ranks.get(p.rank);
    if (list) list.push(p);
    else ranks.set(p.rank, [p]);
  }
  if (ranks.size <= 1) return [pointsLine(label, points, mode, origin)];
  return [...ranks.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([rank, pts]) => pointsLine(`${label} · rank ${rank}`, pts, mode, origin));
}

/** Only the last-value line (overlays of many runs draw no bands). */
export function lastLine(doc: SeriesDoc, mode: XMode, label: string): Line {
  const lines = linesOf(doc, mode, label);
  const line = lines[0] ?? { label, x: [], y: [] };
  if (!line.band) return line;
  const keep = line.y.map((v, i) => v !== null || i === line.y.length - 1);
  return { label, x: line.x.filter((_, i) => keep[i]), y: line.y.filter((_, i) => keep[i]) };
}

/** A log_list: values against their index. */
export function listLine(label: string, values: Value[]): Line {
  return { label, x: values.map((_, i) => i), y: values.map((v) => numeric(v)) };
}

/**
 * Exponential moving average with TensorBoard's debiasing (the first values are not pulled
 * towards 0). weight 0 = raw; nulls stay nulls and do not reset the average.
 */
export function ema(values: (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return values.slice();
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return null;
    last = last * weight + (1 - weight) * v;
    n++;
    const debias = 1 - Math.pow(weight, n);
    return last / debias;
  });
}

/** Align several lines on one sorted x column (nulls where a line has no point). */
export function align(lines: Line[]): { x: number[]; columns: (number | null)[][]; bandColumns: ({ min: (number | null)[]; max: (number | null)[] } | null)[] } {
  if (lines.length === 1) {
    const l = lines[0];
    return { x: l.x, columns: [l.y], bandColumns: [l.band ?? null] };
  }
  const xs = new Set<number>();
  for (const l of lines) for (const v of l.x) xs.add(v);
  const x = [...xs].sort((a, b) => a - b);
  const index = new Map<number, number>();
  x.forEach((v, i) => index.set(v, i));
  const columns = lines.map((l) => {
    const col: (number | null)[] = new Array(x.length).fill(null);
    l.x.forEach((v, i) => {
      const j = index.get(v)!;
      if (l.y[i] !== null) col[j] = l.y[i];
    });
    return col;
  });
  const bandColumns = lines.map((l) => {
    if (!l.band) return null;
    const min: (number | null)[] = new Array(x.length).fill(null);
    const max: (number | null)[] = new Array(x.length).fill(null);
    l.x.forEach((v, i) => {
      const j = index.get(v)!;
      min[j] = l.band!.min[i];
      max[j] = l.band!.max[i];
    });
    return { min, max };
  });
  return { x, columns, bandColumns };
}

function csvCell(v: string | number | null): string {
  if (v === null) return "";
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCSV(header: string[], columns: (number | null | string)[][]): string {
  const rows = [header.map(csvCell).join(",")];
  const n = columns[0]?.length ?? 0;
  for (let i = 0; i < n; i++) rows.push(columns.map((c) => csvCell(c[i] ?? null)).join(","));
  return rows.join("\n") + "\n";
}

export const PALETTE = [
  "#4f46e5", "#e11d48", "#059669", "#d97706", "#0891b2", "#7c3aed", "#db2777", "#65a30d",
  "#2563eb", "#dc2626", "#0d9488", "#ca8a04", "#9333ea", "#ea580c", "#475569", "#16a34a",
];

export function colorOf(i: number): string {
  return PALETTE[i % PALETTE.length];
}
