// The JSON API (/v1/...), same origin. Auth: the studio's HttpOnly cookie travels with every
// request (credentials: "same-origin"); a 401 means "no or expired cookie" and shows the
// token form (see auth.ts).
import { signalUnauthorized } from "./auth";
import type { Scalar } from "./format";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

/** The API's error text: {"error": {"status", "message"}} (else the body or the status). */
async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { error?: { message?: string } };
    if (body.error?.message) return body.error.message;
  } catch {
    /* not JSON */
  }
  return text.trim().slice(0, 500) || `${response.status} ${response.statusText}`;
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, {
      credentials: "same-origin",
      ...init,
      headers: { Accept: "application/json", ...(init.headers ?? {}) },
    });
  } catch (err) {
    throw new ApiError(0, `The API is unreachable (${String(err)}). Is \`runstream up\` running?`, path);
  }
  if (response.status === 401) signalUnauthorized();
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response), path);
  return response;
}

export async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await request(path, { signal });
  return (await response.json()) as T;
}

export async function postJSON<T>(path: string, body?: unknown): Promise<T> {
  const response = await request(path, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      // A header a cross-site form cannot send: the API may require it on the studio's writes.
      "X-Runstream-Studio": "1",
    },
    body: body === undefined ? "{}" : JSON.stringify(body),
  });
  return (await response.json()) as T;
}

/** A query string from a record (undefined/null/"" left out; arrays repeat the key). */
export function qs(params: Record<string, string | number | boolean | null | undefined | string[]>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const enc = encodeURIComponent;

/** A run's file path: each segment escaped, '/' kept (the route takes {name:.+}). */
export function filePath(runId: string, name: string): string {
  return `/v1/runs/${enc(runId)}/files/${name.split("/").map(enc).join("/")}`;
}

// --- shapes (ingest/api/shapes.py, routes/*.py) -------------------------------------------

/**
 * A string logged as a metric value whose text is exactly "NaN", "Infinity" or "-Infinity":
 * the API writes it as {"str": "NaN"}, since the bare strings "NaN", "Infinity" and
 * "-Infinity" stand for the non-finite floats (JSON has no such numbers).
 */
export interface SpelledString {
  str: string;
}

export type Value = number | boolean | string | null | SpelledString;

export const STATUSES = [
  "NotStarted", "Queued", "Preparing", "Running", "NotResponding", "Finalizing",
  "CancelRequested", "Completed", "Failed", "Canceled",
] as const;
export type Status = (typeof STATUSES)[number];
export const TERMINAL: ReadonlySet<string> = new Set(["Completed", "Failed", "Canceled"]);

export interface RunSummary {
  /** Only with ?metric=: the run's summary of each series asked for that it has. */
  metrics?: Record<string, MetricSummary>;
  run_id: string;
  experiment: string;
  workspace: string;
  parent_run_id: string | null;
  display_name: string | null;
  status: Status;
  compute_target: string | null;
  created_at: string;
  queued_at: string | null;
  started_at: string | null;
  ended_at: string | null;
  /** Text, or the number or boolean a tag was given as; null for a tag without value. */
  tags: Record<string, Scalar | null>;
  description: string | null;
}

export interface RunDetails extends RunSummary {
  status_times: Record<string, string | null>;
  error: string | null;
  properties: Record<string, Scalar>;
  children: string[];
  last_heartbeat_at: string | null;
  dropped_events: number;
  number: number;
  portal_url: string;
  /** Metric points, list values and table cells logged (by their own time) after the run ended. */
  logged_after_end: number;
}

export interface RunPage {
  runs: RunSummary[];
  next_cursor: string | null;
}

export interface Experiment {
  name: string;
  workspace: string;
  runs: number;
  /** Runs per status (statuses without runs left out); absent from older APIs. */
  statuses?: Record<string, number>;
  last_run_at: string;
  /** The latest event of any of its runs; absent from older APIs. */
  last_activity_at?: string;
}

export interface ExperimentPage {
  experiments: Experiment[];
  next_cursor: string | null;
}

export type MetricValue = Value | Value[] | Record<string, Value[]>;
export interface TypedMetric {
  schema_type: string;
  file: string;
  sha256: string;
  size_bytes: number;
  content_type: string;
}
export interface MetricsDoc {
  metrics: Record<string, MetricValue>;
  typed?: Record<string, TypedMetric>;
}

export interface Point {
  step: number;
  value: Value;
  rank: number;
  time: string;
  /** Seconds since the epoch (from format=columns, where `time` is ""). */
  t?: number;
}
export interface Bucket {
  step_min: number;
  step_max: number;
  count: number;
  min: number | string | null;
  max: number | string | null;
  last: Value;
  first_time: string;
  last_time: string;
  /** Seconds since the epoch (from format=columns, where the ISO times are ""). */
  t0?: number;
  t1?: number;
}
export interface SeriesDoc {
  name: string;
  run_id: string;
  total_points: number;
  downsampled: boolean;
  points?: Point[];
  buckets?: Bucket[];
}

/** GET /v1/series: one metric of many runs; a run without it says why. */
export interface ManySeriesDoc {
  name: string;
  series: (SeriesDoc | { run_id: string; name: string; missing: string })[];
}

/** Runs one GET /v1/series may name (the API's limit). */
export const MAX_SERIES_RUNS = 200;

/** A series answer of format=columns: one array per field. */
export interface ColumnsDoc {
  name: string;
  run_id: string;
  total_points: number;
  downsampled: boolean;
  columns: Record<string, (Value | null)[]>;
}

/** format=columns → the objects the charts read (times as epoch seconds, no ISO text). */
export function fromColumns(d: ColumnsDoc): SeriesDoc {
  const c = d.columns;
  const num = (k: string, i: number) => c[k][i] as number;
  const head = { name: d.name, run_id: d.run_id, total_points: d.total_points, downsampled: d.downsampled };
  if (d.downsampled) {
    return {
      ...head,
      buckets: c.step_min.map((_, i) => ({
        step_min: num("step_min", i), step_max: num("step_max", i), count: num("count", i),
        min: c.min[i] as number | string | null, max: c.max[i] as number | string | null,
        last: c.last[i] as Value, first_time: "", last_time: "",
        t0: num("first_time_us", i) / 1e6, t1: num("last_time_us", i) / 1e6,
      })),
    };
  }
  return {
    ...head,
    points: c.step.map((_, i) => ({
      step: num("step", i), value: c.value[i] as Value, rank: num("rank", i), time: "",
      t: num("time_us", i) / 1e6,
    })),
  };
}

/** One metric of `runIds` (null where a run has no such series), in as few requests as the
 * API's limit allows, as arrays (format=columns: a fifth of the bytes of objects). */
export async function seriesOfRuns(runIds: string[], name: string, maxPoints: number,
                                   signal?: AbortSignal): Promise<(SeriesDoc | null)[]> {
  const out: (SeriesDoc | null)[] = [];
  for (let i = 0; i < runIds.length; i += MAX_SERIES_RUNS) {
    const doc = await getJSON<{ series: (ColumnsDoc | { run_id: string; missing: string })[] }>(
      `/v1/series${qs({ name, run_id: runIds.slice(i, i + MAX_SERIES_RUNS), max_points: maxPoints, format: "columns" })}`, signal);
    doc.series.forEach((s) => out.push("missing" in s ? null : fromColumns(s)));
  }
  return out;
}

/** A run's summary of one series, as run lists give it with ?metric=. */
export interface MetricSummary {
  kind: "series" | "value";
  count: number;
  last: Value;
  min: number | string | null;
  max: number | string | null;
}

/** GET /v1/metric-names */
export interface MetricName {
  name: string;
  kinds: ("series" | "list" | "table")[];
  runs: number;
}
export interface MetricNamesDoc {
  names: MetricName[];
  runs_scanned: number;
}

/** Metric names one run list may ask summaries of (the API's limit). */
export const MAX_SUMMARY_METRICS = 20;

export interface RunFile {
  name: string;
  kind: string;
  sha256: string;
  size_bytes: number;
  content_type: string;
  created_at: string;
  metric: string | null;
  /** For an IMAGE: the name it was logged under (step s of image n is the file n/step_s.ext). */
  image?: string | null;
  /** For an IMAGE: its step; null for an image stored before steps were kept. */
  step?: number | null;
}

export interface LogLine {
  stream: string;
  line: string;
  rank: number;
  time: string;
}

export interface QueueState {
  compute_target: string;
  queued: number;
  preparing: number;
  running: number;
  not_responding: number;
  oldest_queued_age_s: number | null;
  queue_wait_p50_s: number | null;
  queue_wait_p95_s: number | null;
  completed_1h: number;
  failed_1h: number;
  canceled_1h: number;
  agents?: { alive: number; slots: number; busy: number };
}

export interface QueueEntry {
  run_id: string;
  experiment: string;
  position: number;
  priority: number;
  attempt: number;
  submitted_at: string;
  age_s: number;
}
export interface Lease {
  run_id: string;
  experiment: string;
  agent_id: string;
  attempt: number;
  leased_at: string;
  lease_expires_at: string;
  cancel_requested: boolean;
}
export interface Agent {
  agent_id: string;
  hostname: string;
  pid: number;
  slots: number;
  busy: number;
  started_at: string;
  last_heartbeat_at: string;
  alive: boolean;
}
export interface TargetDoc extends Omit<QueueState, "agents"> {
  active_runs: RunSummary[];
  queue?: QueueEntry[];
  leased?: Lease[];
  agents?: Agent[];
}

export interface Submission {
  run_id: string;
  workspace: string;
  experiment: string;
  target: string;
  state: string;
  priority: number;
  max_retries: number;
  attempt: number;
  display_name: string | null;
  submitted_at: string | null;
  agent_id: string | null;
  leased_at: string | null;
  lease_expires_at: string | null;
  cancel_requested: boolean;
  outcome: string | null;
  exit_code: number | null;
  error: string | null;
  ended_at: string | null;
  spec: Record<string, unknown>;
  snapshot: { sha256: string; size_bytes: number };
  position: number | null;
}

export interface Model {
  id: string;
  name: string;
  version: number;
  workspace: string;
  run_id: string | null;
  experiment: string | null;
  path: string;
  files: { name: string; sha256: string; size_bytes: number }[];
  tags: Record<string, string>;
  properties: Record<string, string>;
  description: string | null;
  created_at: string;
  url: string;
}
export interface ModelPage {
  models: Model[];
  next_cursor: string | null;
}
