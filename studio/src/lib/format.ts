// Display helpers: times, durations, sizes, logged values.
import type { SpelledString, Value } from "./api";

export function parseTime(iso: string | null | undefined): number | null {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** 2026-12-02 14:03:11 in the browser's time zone. */
export function formatTime(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3 min ago", "2 h ago", "5 d ago" (future times read "just now"). */
export function formatAgo(iso: string | null | undefined, now = Date.now()): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  const s = Math.max(0, (now - t) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 86400 * 60) return `${Math.round(s / 86400)} d ago`;
  return formatTime(iso).slice(0, 10);
}

/** 850 ms, 12.3 s, 4m 05s, 2h 03m, 3d 04h. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 0) seconds = 0;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(seconds % 60))}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${pad(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${pad(h % 24)}h`;
}

/** A run's duration: start (or creation) to end, or to now while it runs. */
export function runDuration(
  run: { created_at: string; started_at: string | null; ended_at: string | null },
  now = Date.now(),
): number | null {
  const start = parseTime(run.started_at) ?? parseTime(run.created_at);
  if (start === null) return null;
  const end = parseTime(run.ended_at) ?? now;
  return (end - start) / 1000;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A number for tables and tooltips: up to 6 significant digits, exponent when tiny/huge. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "NaN" : v > 0 ? "∞" : "−∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(4);
  return String(Number(v.toPrecision(6)));
}

/** The API's spelling of a non-finite float: the strings "NaN", "Infinity", "-Infinity". */
const NON_FINITE: Record<string, number> = { NaN: Number.NaN, Infinity: Infinity, "-Infinity": -Infinity };

/**
 * {"str": "NaN"}: a string value spelled like a non-finite float (the API's escape). Only
 * an object with exactly the one string member "str": a table's {column: [values]} is not.
 */
export function isSpelledString(v: unknown): v is SpelledString {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] === "str" && typeof (v as SpelledString).str === "string";
}

/** A non-finite float the API wrote as a string ("NaN", "Infinity", "-Infinity"), else null. */
export function nonFinite(v: Value | undefined): number | null {
  return typeof v === "string" && Object.prototype.hasOwnProperty.call(NON_FINITE, v) ? NON_FINITE[v] : null;
}

/**
 * A logged value as text: numbers formatted (non-finite floats as NaN, ∞, −∞), a string
 * as itself — also one spelled "NaN" that the API escapes as {"str": "NaN"}.
 */
export function formatValue(v: Value | undefined): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return formatNumber(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (isSpelledString(v)) return v.str;
  if (typeof v === "string") {
    const n = nonFinite(v);
    return n === null ? v : formatNumber(n);
  }
  return String(v);
}

/** What a logged value is, for people: number (non-finite floats too), string, boolean, null. */
export function valueType(v: Value | undefined): string {
  if (v === null || v === undefined) return "null";
  if (isSpelledString(v)) return "string";
  if (typeof v === "string") return nonFinite(v) === null ? "string" : "number";
  return typeof v;
}

/**
 * A logged value as a number for charts. The API writes non-finite floats as the strings
 * "NaN", "Infinity", "-Infinity"; those become null (a gap), like any string (spelled
 * {"str": …} or not).
 */
export function numeric(v: Value | undefined): number | null {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

/** A tag's or property's value: text, or the number or boolean it was given as. */
export type Scalar = string | number | boolean;

/**
 * A tag's or property's value as text, exactly (a hyper-parameter such as 0.0003 is not
 * rounded): a number as JavaScript writes it, a boolean as true/false, text as itself —
 * "NaN" too (tags have no escapes: a non-finite float is stored as the text "nan").
 */
export function formatScalar(v: Scalar | null | undefined): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "boolean") return v ? "true" : "false";
  return String(v);
}

/** "number" or "boolean" for a value given typed, null for text (or no value). */
export function scalarType(v: Scalar | null | undefined): "number" | "boolean" | null {
  if (typeof v === "number") return "number";
  return typeof v === "boolean" ? "boolean" : null;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;
}

/** An axis tick: short (1.5M, 250k, 0.001, 1e-6). */
export function formatTick(v: number): string {
  if (!Number.isFinite(v)) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e15 || a < 1e-4) return v.toExponential(1).replace("e+", "e");
  const units: [number, string][] = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e4, "k"]];
  for (const [size, suffix] of units) {
    if (a >= size) {
      const n = v / (suffix === "k" ? 1e3 : size);
      return `${Number(n.toPrecision(4))}${suffix}`;
    }
  }
  return String(Number(v.toPrecision(6)));
}
