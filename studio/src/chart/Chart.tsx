// One uPlot chart: lines (with an optional min–max band each), EMA smoothing with the raw
// line faint behind, linear/log y, hover legend, drag to zoom (the owner may re-query the
// visible range), double-click to reset, PNG and CSV export.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { align, colorOf, ema, toCSV, type Line, type XMode } from "./series";
import { formatDuration, formatNumber, formatTick } from "../lib/format";
import { download, exportCanvasPNG, fileSafe } from "./export";

export interface ChartSettings {
  xMode: XMode;
  logY: boolean;
  smoothing: number;
}

export interface ChartProps {
  title: string;
  lines: Line[];
  settings: ChartSettings;
  xLabel?: string;
  height?: number;
  /** The x range to show (after a zoom); null: fit the data. */
  range?: [number, number] | null;
  onZoom?: (min: number, max: number) => void;
  onResetZoom?: () => void;
  badge?: ComponentChildren;
  colorOffset?: number;
}

const INTEGER_INCRS = Array.from({ length: 16 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();

function withAlpha(hex: string, alpha: number): string {
  const a = Math.round(alpha * 255).toString(16).padStart(2, "0");
  return `${hex}${a}`;
}

interface Built {
  data: uPlot.AlignedData;
  series: uPlot.Series[];
  bands: uPlot.Band[];
  header: string[];
}

function build(lines: Line[], settings: ChartSettings, colorOffset: number, xLabel?: string): Built {
  const { x, columns, bandColumns } = align(lines);
  const positive = (col: (number | null)[]) =>
    settings.logY ? col.map((v) => (v !== null && v > 0 ? v : null)) : col;
  const data: (number | null)[][] = [x];
  const series: uPlot.Series[] = [{}];
  const bands: uPlot.Band[] = [];
  const header = [xLabel ?? (settings.xMode === "step" ? "step" : settings.xMode === "wall" ? "time" : "seconds")];
  const smooth = settings.smoothing > 0;
  lines.forEach((line, i) => {
    const color = colorOf(i + colorOffset);
    const band = bandColumns[i];
    if (band) {
      const maxIdx = data.length;
      data.push(positive(band.max));
      series.push({ label: `${line.label} max`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false }, spanGaps: true });
      data.push(positive(band.min));
      series.push({ label: `${line.label} min`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false }, spanGaps: true });
      bands.push({ series: [maxIdx, maxIdx + 1], fill: withAlpha(color, 0.14) });
      header.push(`${line.label} max`, `${line.label} min`);
    }
    const raw = positive(columns[i]);
    if (smooth) {
      data.push(raw);
      series.push({ label: `${line.label} (raw)`, stroke: withAlpha(color, 0.25), width: 1, points: { show: false }, spanGaps: true });
      header.push(`${line.label} (raw)`);
    }
    data.push(smooth ? positive(ema(columns[i], settings.smoothing)) : raw);
    series.push({
      label: smooth ? `${line.label} (EMA)` : line.label,
      stroke: color,
      width: 1.6,
      spanGaps: true,
      points: { show: x.length < 60, size: 4 },
    });
    header.push(smooth ? `${line.label} (EMA ${settings.smoothing})` : line.label);
  });
  return { data: data as uPlot.AlignedData, series, bands, header };
}

function xValueFormat(mode: XMode): (u: uPlot, v: number) => string {
  if (mode === "wall") return (_u, v) => (v === null ? "—" : new Date(v * 1000).toLocaleString());
  if (mode === "relative") return (_u, v) => (v === null ? "—" : formatDuration(v));
  return (_u, v) => (v === null ? "—" : formatNumber(v));
}

export function Chart(props: ChartProps) {
  const { title, lines, settings, height = 260, range = null, colorOffset = 0 } = props;
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const built = useRef<Built | null>(null);
  const structure = useRef("");
  const handlers = useRef(props);
  handlers.current = props;

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const next = build(lines, settings, colorOffset, props.xLabel);
    built.current = next;
    const key = JSON.stringify([next.series.map((s) => s.label), settings, height, next.bands.length]);
    if (plot.current && structure.current === key) {
      plot.current.setData(next.data, range === null);
      el.dataset.points = String(next.data[0].length);
      if (!el.dataset.drawnAt && next.data[0].length > 0) {
        el.dataset.drawnAt = String(Math.round(performance.now()));
        performance.mark(`runstream:chart:${title}`);
      }
      if (range) plot.current.setScale("x", { min: range[0], max: range[1] });
      return;
    }
    plot.current?.destroy();
    structure.current = key;
    const width = Math.max(200, el.clientWidth);
    // Steps and indexes are integers: no ticks at 2.5.
    const xs = next.data[0] as number[];
    const integerX = settings.xMode === "step" && xs.length > 0 && xs.every((v) => Number.isInteger(v));
    const opts: uPlot.Options = {
      width,
      height,
      series: next.series,
      bands: next.bands,
      scales: {
        // A single x value (or a burst within a millisecond): a span of ±1 around it,
        // not uPlot's padding by magnitude (years, for a wall-clock time).
        x: {
          time: settings.xMode === "wall",
          range: (u, min, max) => {
            const xs = u.data[0];
            const lo = xs[0];
            const hi = xs[xs.length - 1];
            if (xs.length > 0 && hi - lo < 1e-3) return [lo - 1, hi + 1];
            return [min, max];
          },
        },
        y: settings.logY ? { distr: 3 } : { auto: true },
      },
      axes: [
        {
          stroke: "#64748b",
          grid: { stroke: "#eef0f4" },
          ticks: { stroke: "#e2e8f0" },
          incrs: integerX ? INTEGER_INCRS : undefined,
          values: settings.xMode === "relative" ? (_u, vals) => vals.map((v) => formatDuration(v)) : settings.xMode === "step" ? (_u, vals) => vals.map((v) => (v === null ? "" : formatTick(v))) : undefined,
        },
        {
          stroke: "#64748b",
          grid: { stroke: "#eef0f4" },
          ticks: { stroke: "#e2e8f0" },
          size: (_u, values) => Math.max(44, 26 + 7.5 * Math.max(0, ...(values ?? []).map((v) => String(v).length))),
          values: (_u, vals) => vals.map((v) => (v === null ? "" : formatTick(v))),
        },
      ],
      legend: {
        live: true,
        // Many runs overlaid: the legend scrolls instead of pushing the page down.
        mount: (_u, table) => {
          const wrap = document.createElement("div");
          wrap.className = "legend-wrap";
          table.parentNode?.insertBefore(wrap, table);
          wrap.appendChild(table);
        },
      },
      // Several lines: the one nearest the cursor stands out, the others fade.
      focus: lines.length > 1 ? { alpha: 0.3 } : undefined,
      cursor: {
        focus: lines.length > 1 ? { prox: 24 } : undefined,
        drag: { x: true, y: false, setScale: true },
        bind: {
          dblclick: () => () => {
            handlers.current.onResetZoom?.();
            if (!handlers.current.onResetZoom && plot.current && built.current) plot.current.setData(built.current.data, true);
            return null;
          },
        },
      },
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width <= 2) return;
            const min = u.posToVal(u.select.left, "x");
            const max = u.posToVal(u.select.left + u.select.width, "x");
            handlers.current.onZoom?.(min, max);
          },
        ],
      },
    };
    opts.series[0] = { label: handlers.current.xLabel ?? (settings.xMode === "step" ? "step" : "time"), value: xValueFormat(settings.xMode) };
    for (const s of opts.series.slice(1)) s.value = (_u, v) => (v === null || v === undefined ? "—" : formatNumber(v));
    plot.current = new uPlot(opts, next.data, el);
    // For benchmarks (headless Chromium): when each chart first drew, and how many x values.
    el.dataset.points = String(next.data[0].length);
    if (!el.dataset.drawnAt && next.data[0].length > 0) {
      el.dataset.drawnAt = String(Math.round(performance.now()));
      performance.mark(`runstream:chart:${title}`);
    }
    if (range) plot.current.setScale("x", { min: range[0], max: range[1] });
  }, [lines, settings, height, range, colorOffset]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const observer = new ResizeObserver(() => {
      const width = Math.max(200, el.clientWidth);
      if (plot.current && Math.abs(plot.current.width - width) > 1) plot.current.setSize({ width, height });
    });
    observer.observe(el);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
      structure.current = "";
    };
  }, [height]);

  const exportPNG = () => {
    if (plot.current) exportCanvasPNG(title, plot.current.ctx.canvas);
  };

  const exportCSV = () => {
    const b = built.current;
    if (!b) return;
    const csv = toCSV(b.header, b.data as unknown as (number | null)[][]);
    download(`${fileSafe(title)}.csv`, new Blob([csv], { type: "text/csv" }));
  };

  const empty = lines.every((l) => l.x.length === 0);
  return (
    <div class="chart" data-chart={title}>
      <div class="chart-head">
        <span class="chart-title" title={title}>{title}</span>
        {props.badge}
        <span class="chart-tools">
          {range && props.onResetZoom && (
            <button class="btn btn-tiny" onClick={() => props.onResetZoom?.()} title="Show the whole series (or double-click the chart)">
              Reset zoom
            </button>
          )}
          <button class="btn btn-tiny" onClick={exportPNG} title="Download as PNG">PNG</button>
          <button class="btn btn-tiny" onClick={exportCSV} title="Download the plotted values as CSV">CSV</button>
        </span>
      </div>
      {empty && <div class="chart-empty">No numeric values to plot yet.</div>}
      <div ref={box} class="chart-canvas" />
    </div>
  );
}

export function ChartToolbar({ settings, onChange, hasTime = true }: {
  settings: ChartSettings;
  onChange: (s: ChartSettings) => void;
  hasTime?: boolean;
}) {
  return (
    <div class="chart-toolbar">
      <label>
        X axis
        <select
          value={settings.xMode}
          onChange={(e) => onChange({ ...settings, xMode: (e.target as HTMLSelectElement).value as XMode })}
        >
          <option value="step">Step</option>
          {hasTime && <option value="relative">Relative time</option>}
          {hasTime && <option value="wall">Wall time</option>}
        </select>
      </label>
      <label>
        Y axis
        <select
          value={settings.logY ? "log" : "linear"}
          onChange={(e) => onChange({ ...settings, logY: (e.target as HTMLSelectElement).value === "log" })}
        >
          <option value="linear">Linear</option>
          <option value="log">Log</option>
        </select>
      </label>
      <label class="smoothing">
        Smoothing
        <input
          type="range"
          min="0"
          max="0.99"
          step="0.01"
          value={settings.smoothing}
          onInput={(e) => onChange({ ...settings, smoothing: Number((e.target as HTMLInputElement).value) })}
        />
        <span class="mono smoothing-value">{settings.smoothing.toFixed(2)}</span>
      </label>
      <span class="hint">Drag to zoom · double-click to reset</span>
    </div>
  );
}

export const DEFAULT_SETTINGS: ChartSettings = { xMode: "step", logY: false, smoothing: 0 };

/** Chart settings kept per browser (like a preference), shared by every chart. */
export function loadSettings(): ChartSettings {
  try {
    const saved = JSON.parse(localStorage.getItem("runstream.chart") ?? "null") as Partial<ChartSettings> | null;
    return { ...DEFAULT_SETTINGS, ...(saved ?? {}) };
  } catch {
    return DEFAULT_SETTINGS;
  }
}

export function saveSettings(s: ChartSettings): void {
  try {
    localStorage.setItem("runstream.chart", JSON.stringify(s));
  } catch {
    /* private mode */
  }
}
