// Building blocks of the SVG charts (typed metrics): the measured width, axes with grid
// lines styled like the uPlot charts', and an HTML legend whose entries toggle lines.
import type { ComponentChildren, RefObject } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { formatTick } from "../lib/format";
import { FONT } from "./export";
import { niceTicks, type Scale } from "./scale";

export const AXIS = "#64748b";
export const GRID = "#eef0f4";
export const TICK = "#e2e8f0";

/** A box's width in CSS pixels, following resizes (0 until measured). */
export function useWidth<T extends HTMLElement>(): [RefObject<T>, number] {
  const ref = useRef<T>(null);
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const measure = () => setWidth((w) => (Math.abs(w - el.clientWidth) > 1 ? el.clientWidth : w));
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

export interface Margin {
  top: number;
  right: number;
  bottom: number;
  left: number;
}

/** An <svg> with the fonts set as attributes, so an exported PNG looks the same. */
export function Svg({ width, height, label, children, onMove, onLeave, svgRef }: {
  width: number;
  height: number;
  label: string;
  children: ComponentChildren;
  onMove?: (x: number, y: number) => void;
  onLeave?: () => void;
  svgRef?: (el: SVGSVGElement | null) => void;
}) {
  return (
    <svg
      ref={svgRef}
      class="typed-svg"
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={label}
      font-family={FONT}
      font-size="12"
      onMouseMove={onMove ? (e) => {
        const r = (e.currentTarget as SVGSVGElement).getBoundingClientRect();
        onMove(e.clientX - r.left, e.clientY - r.top);
      } : undefined}
      onMouseLeave={onLeave}
    >
      <rect x="0" y="0" width={width} height={height} fill="#ffffff" />
      {children}
    </svg>
  );
}

/** Grid, axis lines, tick labels and axis titles of a plot area. */
export function Axes({ x, y, xLabel, yLabel, xTicks, yTicks, xFormat = formatTick, yFormat = formatTick, yRight }: {
  x: Scale;
  y: Scale;
  xLabel: string;
  yLabel: string;
  xTicks?: number[];
  yTicks?: number[];
  xFormat?: (v: number) => string;
  yFormat?: (v: number) => string;
  /** A second y axis on the right (its own scale and title). */
  yRight?: { scale: Scale; label: string; ticks?: number[]; format?: (v: number) => string };
}) {
  const [left, right] = x.range;
  const [bottom, top] = y.range;
  const xs = xTicks ?? niceTicks(x.domain[0], x.domain[1], Math.max(2, Math.round((right - left) / 80)));
  const ys = yTicks ?? niceTicks(y.domain[0], y.domain[1], Math.max(2, Math.round((bottom - top) / 50)));
  const rightTicks = yRight ? yRight.ticks ?? niceTicks(yRight.scale.domain[0], yRight.scale.domain[1], Math.max(2, Math.round((bottom - top) / 50))) : [];
  return (
    <g class="axes">
      {xs.map((v) => <line key={`gx${v}`} x1={x(v)} x2={x(v)} y1={top} y2={bottom} stroke={GRID} />)}
      {ys.map((v) => <line key={`gy${v}`} x1={left} x2={right} y1={y(v)} y2={y(v)} stroke={GRID} />)}
      <line x1={left} x2={right} y1={bottom} y2={bottom} stroke={TICK} />
      <line x1={left} x2={left} y1={top} y2={bottom} stroke={TICK} />
      {xs.map((v) => (
        <g key={`tx${v}`}>
          <line x1={x(v)} x2={x(v)} y1={bottom} y2={bottom + 4} stroke={TICK} />
          <text x={x(v)} y={bottom + 16} text-anchor="middle" fill={AXIS} font-size="11">{xFormat(v)}</text>
        </g>
      ))}
      {ys.map((v) => (
        <g key={`ty${v}`}>
          <line x1={left - 4} x2={left} y1={y(v)} y2={y(v)} stroke={TICK} />
          <text x={left - 7} y={y(v)} dy="0.32em" text-anchor="end" fill={AXIS} font-size="11">{yFormat(v)}</text>
        </g>
      ))}
      {yRight && rightTicks.map((v) => (
        <text key={`tr${v}`} x={right + 6} y={yRight.scale(v)} dy="0.32em" fill={AXIS} font-size="11">{(yRight.format ?? formatTick)(v)}</text>
      ))}
      <text x={(left + right) / 2} y={bottom + 34} text-anchor="middle" fill={AXIS} font-weight="600">{xLabel}</text>
      <text transform={`translate(13 ${(top + bottom) / 2}) rotate(-90)`} text-anchor="middle" fill={AXIS} font-weight="600">{yLabel}</text>
      {yRight && rightTicks.length > 0 && (
        // Centred on the span its ticks cover (the counts use the bottom part only).
        <text transform={`translate(${right + 44} ${(yRight.scale(rightTicks[0]) + yRight.scale(rightTicks[rightTicks.length - 1])) / 2}) rotate(90)`} text-anchor="middle" fill={AXIS} font-weight="600">{yRight.label}</text>
      )}
    </g>
  );
}

export interface LegendEntry {
  key: string;
  label: string;
  color: string;
  dash?: boolean;
  note?: string;
  hidden?: boolean;
  title?: string;
  /** Not a line one can hide (a reference line, bars). */
  fixed?: boolean;
  /** Drawn as a filled box (bars), not a line. */
  bar?: boolean;
}

/** The legend under a chart; with onToggle its entries show and hide their line. */
export function Legend({ entries, onToggle, vertical }: { entries: LegendEntry[]; onToggle?: (key: string) => void; vertical?: boolean }) {
  return (
    <div class={`typed-legend ${vertical ? "legend-vertical" : ""}`}>
      {entries.map((e) => {
        const body = (
          <>
            <span class={`swatch ${e.dash ? "swatch-dash" : ""} ${e.bar ? "swatch-bar" : ""}`} style={e.bar ? { background: e.color } : { borderColor: e.color }} aria-hidden="true" />
            <span class="legend-label">{e.label}</span>
            {e.note && <span class="legend-note">{e.note}</span>}
          </>
        );
        return onToggle && !e.fixed ? (
          <button
            key={e.key}
            type="button"
            class={`legend-item ${e.hidden ? "legend-off" : ""}`}
            aria-pressed={!e.hidden}
            title={e.title ?? (e.hidden ? `Show ${e.label}` : `Hide ${e.label}`)}
            onClick={() => onToggle(e.key)}
          >
            {body}
          </button>
        ) : (
          <span key={e.key} class="legend-item" title={e.title}>{body}</span>
        );
      })}
    </div>
  );
}

/** One line under a chart saying what the pointer is on (a hint while it is on nothing). */
export function Readout({ children, hint }: { children?: ComponentChildren; hint: string }) {
  return <div class="typed-readout" aria-live="polite">{children ?? <span class="hint">{hint}</span>}</div>;
}
