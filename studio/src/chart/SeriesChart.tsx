// One metric of one run: the whole series as exact points or min/max/last buckets, refined
// by re-querying the visible step range on zoom until the points are exact; follows new
// points live.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, enc, getJSON, qs, type Point, type SeriesDoc, type Value } from "../lib/api";
import { formatNumber } from "../lib/format";
import { Chart, type ChartSettings } from "./Chart";
import { linesOf, listLine, originOf } from "./series";

/** Buckets (or points) asked for: about two per horizontal pixel of a wide chart. */
export const MAX_POINTS = 1500;

export type PointListener = (points: Point[]) => void;

/** Per-metric subscriptions to the run's live "point" events. */
export class PointHub {
  private listeners = new Map<string, Set<PointListener>>();
  subscribe(name: string, l: PointListener): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(l);
    return () => void set!.delete(l);
  }
  publish(name: string, points: Point[]): void {
    this.listeners.get(name)?.forEach((l) => l(points));
  }
  has(name: string): boolean {
    return (this.listeners.get(name)?.size ?? 0) > 0;
  }
  private resyncs = new Set<() => void>();
  /** Called when the live stream (re)opens: what was read before may have missed points. */
  onResync(l: () => void): () => void {
    this.resyncs.add(l);
    return () => void this.resyncs.delete(l);
  }
  resync(): void {
    this.resyncs.forEach((l) => l());
  }
}

function seriesUrl(runId: string, name: string, range: [number, number] | null): string {
  const path = `/v1/runs/${enc(runId)}/metrics/${name.split("/").map(enc).join("/")}`;
  return path + qs({
    max_points: MAX_POINTS,
    step_min: range ? Math.floor(range[0]) : undefined,
    step_max: range ? Math.ceil(range[1]) : undefined,
  });
}

export function SeriesChart({ runId, name, settings, hub, listValues }: {
  runId: string;
  name: string;
  settings: ChartSettings;
  hub?: PointHub;
  /** The values from the metrics dict: drawn as a log_list when the name is no series. */
  listValues?: Value[];
}) {
  const [doc, setDoc] = useState<SeriesDoc | null>(null);
  const [full, setFull] = useState<SeriesDoc | null>(null);
  const [range, setRange] = useState<[number, number] | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [notSeries, setNotSeries] = useState(false);
  const [loading, setLoading] = useState(true);
  const state = useRef({ range, doc, inflight: 0 });
  state.current.range = range;
  state.current.doc = doc;

  const load = async (r: [number, number] | null) => {
    const ticket = ++state.current.inflight;
    setLoading(true);
    try {
      const answer = await getJSON<SeriesDoc>(seriesUrl(runId, name, r));
      if (ticket !== state.current.inflight) return;
      setDoc(answer);
      if (!r) setFull(answer);
      setError(null);
    } catch (err) {
      if (ticket !== state.current.inflight) return;
      if (err instanceof ApiError && err.status === 404 && !r) setNotSeries(true);
      else setError(err as Error);
    } finally {
      if (ticket === state.current.inflight) setLoading(false);
    }
  };

  useEffect(() => {
    setRange(null);
    setNotSeries(false);
    void load(null);
  }, [runId, name]);

  // Live points: appended in place while the chart shows every point of the whole
  // series; otherwise the visible range is re-read (at most once a second).
  useEffect(() => {
    if (!hub) return;
    let timer: number | undefined;
    let last = 0;
    const refresh = () => {
      timer = undefined;
      last = Date.now();
      if (!state.current.range) void load(null);
    };
    const offResync = hub.onResync(() => {
      if (!state.current.range) void load(null);
    });
    const offPoints = hub.subscribe(name, (points) => {
      const current = state.current.doc;
      if (current && !current.downsampled && !state.current.range && current.points &&
          current.points.length + points.length <= MAX_POINTS) {
        const merged = [...current.points, ...points].sort((a, b) => a.step - b.step || a.rank - b.rank);
        const next = { ...current, points: merged, total_points: merged.length };
        setDoc(next);
        setFull(next);
        return;
      }
      if (timer === undefined) timer = window.setTimeout(refresh, Math.max(0, last + 1000 - Date.now()));
    });
    return () => {
      offResync();
      offPoints();
      window.clearTimeout(timer);
    };
  }, [hub, name]);

  const origin = useMemo(() => (full ? originOf(full) : 0), [full]);
  const lines = useMemo(() => {
    if (notSeries) return listValues ? [listLine(name, listValues)] : [];
    return doc ? linesOf(doc, settings.xMode, name, origin) : [];
  }, [doc, notSeries, listValues, settings.xMode, name, origin]);

  const stepZoom = settings.xMode === "step" && !notSeries;
  const badge = notSeries ? (
    <span class="badge" title="Logged with log_list: values against their index">list</span>
  ) : doc ? (
    <span
      class={`badge ${doc.downsampled ? "badge-warn" : ""}`}
      title={doc.downsampled
        ? `${formatNumber(doc.total_points)} points in ${doc.buckets?.length} buckets: the band is each bucket's min–max, the line its last value. Zoom in to refine.`
        : `${formatNumber(doc.total_points)} points, all drawn`}
    >
      {doc.downsampled ? `${formatNumber(doc.total_points)} pts · min–max` : `${formatNumber(doc.total_points)} pts`}
    </span>
  ) : null;

  if (error && !doc) {
    return (
      <div class="chart chart-error">
        <div class="chart-head"><span class="chart-title">{name}</span></div>
        <div class="banner banner-error">{error.message}</div>
      </div>
    );
  }
  return (
    <div class={`series-chart ${loading ? "is-loading" : ""}`}>
      <Chart
        title={name}
        lines={lines}
        settings={notSeries ? { ...settings, xMode: "step" } : settings}
        range={stepZoom ? range : null}
        badge={badge}
        onZoom={stepZoom ? (min, max) => {
          const r: [number, number] = [min, max];
          setRange(r);
          // Exact already (the whole answer had every point): no need to ask again.
          if (state.current.doc?.downsampled) void load(r);
        } : undefined}
        onResetZoom={stepZoom ? () => {
          setRange(null);
          if (full) setDoc(full);
          if (full?.downsampled || !full) void load(null);
        } : undefined}
      />
    </div>
  );
}
