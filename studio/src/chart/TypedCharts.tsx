// Typed metrics drawn the way Azure ML studio draws them: a confusion matrix as a heatmap
// (counts or row-normalised) with per-class scores, an accuracy table as ROC and
// precision–recall curves per class with micro and macro averages, residuals as a
// histogram, predictions as the average prediction per bin of true values against the
// ideal line. SVG (text stays text: readable, selectable, testable), styled like the
// uPlot charts, with PNG and CSV downloads.
import type { ComponentChildren } from "preact";
import { useMemo, useRef, useState } from "preact/hooks";
import { filePath, getJSON, type TypedMetric } from "../lib/api";
import { useAsync } from "../lib/hooks";
import { formatNumber, formatTick } from "../lib/format";
import {
  accuracyColumns, classScores, confusionColumns, histogramBins, normalizeRows, predictionBins,
  predictionColumns, prCurves, readTyped, residualColumns, rocCurves, TYPED_KINDS,
  type AccuracyTable, type Columns, type ConfusionMatrix, type Curve, type Predictions,
  type Residuals, type TypedDoc,
} from "../lib/typed";
import { download, exportSvgPNG, fileSafe } from "./export";
import { linear, niceDomain } from "./scale";
import { toCSV, colorOf } from "./series";
import { AXIS, Axes, Legend, Readout, Svg, useWidth, type LegendEntry } from "./svg";
import { Spinner } from "../components/ui";

const ACCENT = "#4f46e5";
const pct = (v: number | null, digits = 1) => (v === null ? "—" : `${(v * 100).toFixed(digits)}%`);
const fixed = (v: number | null, digits = 3) => (v === null ? "—" : v.toFixed(digits));

/** The chart card: title, kind, the chart's own controls, PNG/CSV/JSON. */
function TypedCard({ name, type, runId, file, tools, onPNG, csv, children }: {
  name: string;
  type: TypedDoc["type"] | string;
  runId: string;
  file: string;
  tools?: ComponentChildren;
  onPNG?: () => void;
  csv?: () => Columns;
  children: ComponentChildren;
}) {
  const kind = TYPED_KINDS[type as TypedDoc["type"]] ?? type.replace(/_/g, " ");
  return (
    <div class="chart typed-chart" data-chart={name} data-typed={type}>
      <div class="chart-head">
        <span class="chart-title" title={name}>{name}</span>
        <span class="badge" title={`Logged with run.log_${type}`}>{kind}</span>
        <span class="chart-tools">
          {tools}
          {onPNG && <button class="btn btn-tiny" onClick={onPNG} title="Download as PNG">PNG</button>}
          {csv && (
            <button
              class="btn btn-tiny"
              title="Download the values as CSV"
              onClick={() => {
                const c = csv();
                download(`${fileSafe(name)}.csv`, new Blob([toCSV(c.header, c.columns)], { type: "text/csv" }));
              }}
            >
              CSV
            </button>
          )}
          <a class="btn btn-tiny" href={filePath(runId, file)} target="_blank" rel="noreferrer" title="The stored JSON document">JSON</a>
        </span>
      </div>
      {children}
    </div>
  );
}

/** One typed metric: its JSON read from the run's file of that name, then drawn. */
export function TypedMetricChart({ runId, name, meta }: { runId: string; name: string; meta: TypedMetric }) {
  const doc = useAsync((signal) => getJSON<unknown>(filePath(runId, meta.file), signal), [runId, meta.file, meta.sha256]);
  const typed = useMemo(() => (doc.data === undefined ? undefined : readTyped(meta.schema_type, doc.data)), [doc.data, meta.schema_type]);
  const card = { name, runId, file: meta.file };
  if (doc.error || typed instanceof Error) {
    const message = doc.error ? doc.error.message : (typed as Error).message;
    return (
      <TypedCard {...card} type={meta.schema_type}>
        <div class="banner banner-error">Cannot draw this {meta.schema_type.replace(/_/g, " ")}: {message}</div>
      </TypedCard>
    );
  }
  if (!typed) return <TypedCard {...card} type={meta.schema_type}><Spinner /></TypedCard>;
  switch (typed.type) {
    case "confusion_matrix":
      return <ConfusionMatrixChart {...card} cm={typed.data} />;
    case "accuracy_table":
      return <AccuracyChart {...card} table={typed.data} />;
    case "residuals":
      return <ResidualsChart {...card} residuals={typed.data} />;
    case "predictions":
      return <PredictionsChart {...card} predictions={typed.data} />;
  }
}

interface CardProps {
  name: string;
  runId: string;
  file: string;
}

/** Refs to a card's SVGs, for the PNG. */
function useSvgs(): [(i: number) => (el: SVGSVGElement | null) => void, () => SVGSVGElement[]] {
  const refs = useRef<(SVGSVGElement | null)[]>([]);
  return [
    (i) => (el) => {
      refs.current[i] = el;
    },
    () => refs.current.filter((el): el is SVGSVGElement => el !== null),
  ];
}

// --- confusion matrix ----------------------------------------------------------------

/** White-ish (0) to indigo (1). */
function heat(t: number): string {
  if (!(t > 0)) return "#f8fafc";
  const a = [238, 242, 255];
  const b = [55, 48, 163];
  const s = Math.min(1, t) ** 0.8;
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * s)).join(",")})`;
}

function truncate(text: string, chars: number): string {
  return text.length > chars ? `${text.slice(0, Math.max(1, chars - 1))}…` : text;
}

function ConfusionMatrixChart({ cm, ...card }: CardProps & { cm: ConfusionMatrix }) {
  const [normalized, setNormalized] = useState(false);
  const [hover, setHover] = useState<[number, number] | null>(null);
  const [layout, width] = useWidth<HTMLDivElement>();
  const [svgRef, svgs] = useSvgs();
  const labels = cm.class_labels.map(String);
  const n = labels.length;
  const values = useMemo(() => (normalized ? normalizeRows(cm.matrix) : cm.matrix), [cm, normalized]);
  const max = normalized ? 1 : Math.max(0, ...cm.matrix.flat());
  const scores = useMemo(() => classScores(cm), [cm]);

  // Geometry: row labels on the left, column labels below (slanted when long), the
  // colour scale on the right; cells square, 12–64 px.
  const longest = Math.max(...labels.map((l) => l.length));
  const labelChars = Math.min(18, longest);
  const rowLabelW = 30 + Math.max(2, labelChars) * 7;
  // Side by side with the scores when the card is wide enough, else the scores below.
  const plotMax = (width || 900) >= 860 ? (width || 900) - 400 : width || 520;
  const avail = Math.max(120, Math.min(plotMax, n > 12 ? 820 : 620) - rowLabelW - 70);
  const cell = Math.max(12, Math.min(88, Math.floor(avail / n)));
  const slant = labelChars * 7 > cell - 6;
  const colLabelH = slant ? 14 + Math.round(labelChars * 6.5 * 0.64) : 20;
  // Small cells: every k-th label, so labels never overlap.
  const rowStride = Math.ceil(13 / cell);
  const colStride = Math.ceil((slant ? 13 : 7 * labelChars) / cell);
  const labelSize = Math.min(11.5, cell - 0.5);
  const top = 8;
  const left = rowLabelW;
  const side = cell * n;
  const height = top + side + colLabelH + 24;
  const svgWidth = left + side + 70;
  const showText = cell >= 26;
  const fontSize = Math.min(13, Math.max(9, cell / 4));

  const cellText = (v: number) => (normalized ? pct(v, v >= 0.995 || v === 0 ? 0 : 1) : formatNumber(v));
  const onMove = (x: number, y: number) => {
    const c = Math.floor((x - left) / cell);
    const r = Math.floor((y - top) / cell);
    setHover(c >= 0 && c < n && r >= 0 && r < n ? [r, c] : null);
  };
  const rowTotal = (r: number) => cm.matrix[r].reduce((a, b) => a + b, 0);

  return (
    <TypedCard
      {...card}
      type="confusion_matrix"
      tools={
        <span class="seg" role="group" aria-label="Cell values">
          <button type="button" class={`seg-btn ${normalized ? "" : "seg-on"}`} aria-pressed={!normalized} onClick={() => setNormalized(false)}>Counts</button>
          <button type="button" class={`seg-btn ${normalized ? "seg-on" : ""}`} aria-pressed={normalized} onClick={() => setNormalized(true)} title="Each row (true class) as fractions of its samples">Normalized</button>
        </span>
      }
      onPNG={() => void exportSvgPNG(`${card.name} (${normalized ? "normalized" : "counts"})`, svgs())}
      csv={() => confusionColumns(normalized ? { class_labels: cm.class_labels, matrix: values } : cm)}
    >
      <div class="cm-layout" ref={layout}>
        <div class="cm-plot">
          <Svg width={svgWidth} height={height} label={`Confusion matrix ${card.name}`} svgRef={svgRef(0)} onMove={onMove} onLeave={() => setHover(null)}>
            {values.map((row, r) => row.map((v, c) => {
              const t = max > 0 ? v / max : 0;
              const on = hover && hover[0] === r && hover[1] === c;
              return (
                <g key={`${r}-${c}`} class="cm-cell" data-row={r} data-col={c}>
                  <rect x={left + c * cell} y={top + r * cell} width={cell} height={cell} fill={heat(t)} stroke={on ? "#0f172a" : "#ffffff"} stroke-width={on ? 2 : 1} />
                  {showText && (
                    <text x={left + c * cell + cell / 2} y={top + r * cell + cell / 2} dy="0.35em" text-anchor="middle" font-size={fontSize} pointer-events="none"
                      fill={t > 0.5 ? "#ffffff" : "#0f172a"} font-weight={r === c ? "600" : "400"}>
                      {cellText(v)}
                    </text>
                  )}
                </g>
              );
            }))}
            {labels.map((l, i) => i % rowStride === 0 && (
              <g key={`r${i}`}>
                <title>{l}</title>
                <text class="cm-label" x={left - 6} y={top + i * cell + cell / 2} dy="0.32em" text-anchor="end" fill={AXIS} font-size={labelSize}>{truncate(l, 18)}</text>
              </g>
            ))}
            {labels.map((l, i) => {
              if (i % colStride !== 0) return null;
              const x = left + i * cell + cell / 2;
              const y = top + side + 14;
              return (
                <g key={`c${i}`}>
                  <title>{l}</title>
                  {slant ? (
                    <text class="cm-label" x={x} y={y - 6} transform={`rotate(-40 ${x} ${y - 6})`} text-anchor="end" dy="0.7em" fill={AXIS} font-size={labelSize}>{truncate(l, 18)}</text>
                  ) : (
                    <text class="cm-label" x={x} y={y} text-anchor="middle" fill={AXIS} font-size={labelSize}>{l}</text>
                  )}
                </g>
              );
            })}
            <text x={left + side / 2} y={height - 6} text-anchor="middle" fill={AXIS} font-weight="600">Predicted label</text>
            <text transform={`translate(13 ${top + side / 2}) rotate(-90)`} text-anchor="middle" fill={AXIS} font-weight="600">True label</text>
            <defs>
              <linearGradient id={`cm-scale-${fileSafe(card.name)}`} x1="0" y1="1" x2="0" y2="0">
                {[0, 0.25, 0.5, 0.75, 1].map((t) => <stop key={t} offset={t} stop-color={heat(t || 0.001)} />)}
              </linearGradient>
            </defs>
            <rect x={left + side + 16} y={top} width="10" height={side} fill={`url(#cm-scale-${fileSafe(card.name)})`} stroke="#e2e8f0" />
            <text x={left + side + 31} y={top + 4} dy="0.32em" fill={AXIS} font-size="11">{normalized ? "100%" : formatTick(max)}</text>
            <text x={left + side + 31} y={top + side - 4} dy="0.32em" fill={AXIS} font-size="11">0</text>
          </Svg>
          <Readout hint={showText ? "Rows: true class · columns: predicted class" : "Hover a cell for its count"}>
            {hover && (
              <span>
                True <strong>{labels[hover[0]]}</strong>, predicted <strong>{labels[hover[1]]}</strong>:{" "}
                <span class="mono">{formatNumber(cm.matrix[hover[0]][hover[1]])}</span>
                {rowTotal(hover[0]) > 0 && <> · {pct(cm.matrix[hover[0]][hover[1]] / rowTotal(hover[0]))} of true {labels[hover[0]]}</>}
              </span>
            )}
          </Readout>
        </div>
        <div class="cm-scores" style={{ maxHeight: `${Math.max(160, height + 24)}px` }}>
          <table class="table compact score-table">
            <thead>
              <tr><th>Class</th><th class="num">Precision</th><th class="num">Recall</th><th class="num">F1</th><th class="num">Support</th></tr>
            </thead>
            <tbody>
              {scores.classes.map((s) => (
                <tr key={s.label}>
                  <td class="mono" title={s.label}>{truncate(s.label, 24)}</td>
                  <td class="num">{fixed(s.precision)}</td>
                  <td class="num">{fixed(s.recall)}</td>
                  <td class="num">{fixed(s.f1)}</td>
                  <td class="num">{formatNumber(s.support)}</td>
                </tr>
              ))}
            </tbody>
            <tfoot>
              <tr><td>Accuracy</td><td class="num" colSpan={3}>{fixed(scores.accuracy)}</td><td class="num">{formatNumber(scores.total)}</td></tr>
            </tfoot>
          </table>
        </div>
      </div>
    </TypedCard>
  );
}

// --- accuracy table ------------------------------------------------------------------

interface Styled {
  key: string;
  color: string;
  dash?: string;
  width: number;
}

function curveStyle(c: Curve, i: number): Styled {
  if (c.kind === "micro") return { key: "micro", color: "#0f172a", dash: "6 4", width: 2 };
  if (c.kind === "macro") return { key: "macro", color: "#64748b", dash: "2 3", width: 2 };
  return { key: `c${i}`, color: colorOf(i), width: 1.6 };
}

function CurvePlot({ title, curves, hidden, xLabel, yLabel, diagonal, svgRef, describe }: {
  title: string;
  curves: Curve[];
  hidden: Set<string>;
  xLabel: string;
  yLabel: string;
  diagonal?: boolean;
  svgRef: (el: SVGSVGElement | null) => void;
  describe: (c: Curve, p: Curve["points"][number]) => ComponentChildren;
}) {
  const [box, width] = useWidth<HTMLDivElement>();
  const [hover, setHover] = useState<{ c: number; p: number } | null>(null);
  // The plot area about square (rates against rates), as wide as the box allows.
  const w = Math.max(240, width || 400);
  const h = Math.round(Math.min(490, Math.max(260, w + 8)));
  const m = { top: 30, right: 14, bottom: 44, left: 50 };
  const x = linear([0, 1], [m.left, w - m.right]);
  const y = linear([0, 1], [h - m.bottom, m.top]);
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1];
  const styles = curves.map(curveStyle);
  const visible = curves.map((c, i) => !hidden.has(styles[i].key) && c.points.length > 0);
  const onMove = (px: number, py: number) => {
    let best: { c: number; p: number } | null = null;
    let bestD = 28;
    for (let ci = 0; ci < curves.length; ci++) {
      if (!visible[ci]) continue;
      curves[ci].points.forEach((p, pi) => {
        const d = Math.hypot(x(p.x) - px, y(p.y) - py);
        if (p.threshold !== null && d < bestD) {
          bestD = d;
          best = { c: ci, p: pi };
        }
      });
    }
    setHover(best);
  };
  const hc = hover ? curves[hover.c] : null;
  const hp = hover && hc ? hc.points[hover.p] : null;
  return (
    <div class="curve-plot" ref={box}>
      <Svg width={w} height={h} label={`${title}: ${curves.length} curves`} svgRef={svgRef} onMove={onMove} onLeave={() => setHover(null)}>
        <text class="plot-title" x={m.left} y="14" fill="#334155" font-size="12.5" font-weight="600">{title}</text>
        <Axes x={x} y={y} xLabel={xLabel} yLabel={yLabel} xTicks={ticks} yTicks={ticks} xFormat={(v) => String(v)} yFormat={(v) => String(v)} />
        {diagonal && <line class="chance" x1={x(0)} y1={y(0)} x2={x(1)} y2={y(1)} stroke="#94a3b8" stroke-dasharray="4 4" stroke-width="1.2" />}
        {curves.map((c, i) => visible[i] && (
          <path
            key={styles[i].key}
            class="curve"
            data-curve={c.label}
            d={c.points.map((p, k) => `${k ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join("")}
            fill="none"
            stroke={styles[i].color}
            stroke-width={hover && hover.c === i ? styles[i].width + 1 : styles[i].width}
            stroke-dasharray={styles[i].dash}
            stroke-linejoin="round"
            opacity={hover && hover.c !== i ? 0.35 : 1}
          />
        ))}
        {hp && hc && <circle cx={x(hp.x)} cy={y(hp.y)} r="4.5" fill="#ffffff" stroke={styles[hover!.c].color} stroke-width="2" />}
      </Svg>
      <Readout hint="Hover a curve for its threshold">{hp && hc && describe(hc, hp)}</Readout>
    </div>
  );
}

function AccuracyChart({ table, ...card }: CardProps & { table: AccuracyTable }) {
  const roc = useMemo(() => rocCurves(table), [table]);
  const pr = useMemo(() => prCurves(table), [table]);
  const many = table.class_labels.length > 10;
  // Many classes: the averages first, classes one click away.
  const [hidden, setHidden] = useState<Set<string>>(() => new Set(many ? table.class_labels.map((_, i) => `c${i}`) : []));
  const [svgRef, svgs] = useSvgs();
  const styles = roc.map(curveStyle);
  const toggle = (key: string) => setHidden((old) => {
    const next = new Set(old);
    if (next.has(key)) next.delete(key);
    else next.add(key);
    return next;
  });
  const entries: LegendEntry[] = roc.map((c, i) => ({
    key: styles[i].key,
    label: c.label,
    color: styles[i].color,
    dash: !!styles[i].dash,
    hidden: hidden.has(styles[i].key),
    note: c.area === null ? "no positives" : `AUC ${c.area.toFixed(3)} · AP ${pr[i].area === null ? "—" : pr[i].area!.toFixed(3)}`,
    title: c.area === null ? `${c.label}: no samples of this class (or of the others), so no curve` : undefined,
  }));
  const threshold = (t: number | null) => (t === null ? "" : ` · threshold ${formatNumber(t)}`);
  return (
    <TypedCard
      {...card}
      type="accuracy_table"
      onPNG={() => void exportSvgPNG(card.name, svgs(), entries.filter((e) => !e.hidden).map((e) => ({ label: `${e.label} (${e.note})`, color: e.color, dash: e.dash })))}
      csv={() => accuracyColumns(table)}
    >
      <div class="acc-layout">
        <CurvePlot
          title="ROC curve"
          curves={roc}
          hidden={hidden}
          xLabel="False positive rate"
          yLabel="True positive rate"
          diagonal
          svgRef={svgRef(0)}
          describe={(c, p) => <span><strong>{c.label}</strong> · FPR <span class="mono">{fixed(p.x)}</span> · TPR <span class="mono">{fixed(p.y)}</span>{threshold(p.threshold)}</span>}
        />
        <CurvePlot
          title="Precision–recall curve"
          curves={pr}
          hidden={hidden}
          xLabel="Recall"
          yLabel="Precision"
          svgRef={svgRef(1)}
          describe={(c, p) => <span><strong>{c.label}</strong> · recall <span class="mono">{fixed(p.x)}</span> · precision <span class="mono">{fixed(p.y)}</span>{threshold(p.threshold)}</span>}
        />
        <div class="acc-side">
          {table.class_labels.length > 1 && (
            <div class="legend-tools">
              <button type="button" class="link-btn" onClick={() => setHidden(new Set())}>Show every class</button>
              <span class="muted"> · </span>
              <button type="button" class="link-btn" onClick={() => setHidden(new Set(table.class_labels.map((_, i) => `c${i}`)))}>Averages only</button>
            </div>
          )}
          <Legend vertical entries={[...entries, { key: "chance", label: "chance (ROC)", color: "#94a3b8", dash: true, fixed: true }]} onToggle={toggle} />
          <p class="typed-note">
            Each class against the rest, at {table.probability_thresholds.length} probability thresholds. Micro average: the counts of all classes summed; macro average: the classes' rates averaged. AUC: area under the ROC curve; AP: average precision. Click an entry to show or hide its curves.
          </p>
        </div>
      </div>
    </TypedCard>
  );
}

// --- residuals -----------------------------------------------------------------------

const PLOT_HEIGHT = 260;

function ResidualsChart({ residuals, ...card }: CardProps & { residuals: Residuals }) {
  const [box, width] = useWidth<HTMLDivElement>();
  const [hover, setHover] = useState<number | null>(null);
  const [svgRef, svgs] = useSvgs();
  const bins = useMemo(() => histogramBins(residuals), [residuals]);
  const total = bins.reduce((a, b) => a + b.count, 0);
  const w = Math.max(240, width || 480);
  const h = PLOT_HEIGHT;
  const m = { top: 10, right: 14, bottom: 44, left: 52 };
  const lo = bins[0].lo;
  const hi = Math.max(...bins.map((b) => b.hi));
  const x = linear([lo, hi === lo ? lo + 1 : hi], [m.left, w - m.right]);
  const top = Math.max(0, ...bins.map((b) => b.count));
  const y = linear([0, top > 0 ? niceDomain(0, top)[1] : 1], [h - m.bottom, m.top]);
  const onMove = (px: number) => {
    const v = x.invert(px);
    const i = bins.findIndex((b) => v >= b.lo && v <= b.hi);
    setHover(i >= 0 ? i : null);
  };
  const b = hover === null ? null : bins[hover];
  return (
    <TypedCard {...card} type="residuals" onPNG={() => void exportSvgPNG(card.name, svgs())} csv={() => residualColumns(residuals)}>
      <div ref={box}>
        <Svg width={w} height={h} label={`Histogram of residuals ${card.name}`} svgRef={svgRef(0)} onMove={onMove} onLeave={() => setHover(null)}>
          <Axes x={x} y={y} xLabel="Residual (true − predicted)" yLabel="Count" />
          {bins.map((bin, i) => {
            const bx = x(bin.lo);
            const bw = Math.max(1, x(bin.hi) - bx);
            return (
              <rect key={i} class="bar" x={bx + (bw > 4 ? 0.5 : 0)} y={y(bin.count)} width={bw > 4 ? bw - 1 : bw} height={Math.max(0, y(0) - y(bin.count))}
                fill={ACCENT} fill-opacity={hover === i ? 0.95 : 0.72} />
            );
          })}
          {lo < 0 && hi > 0 && <line class="zero" x1={x(0)} x2={x(0)} y1={m.top} y2={h - m.bottom} stroke="#0f172a" stroke-dasharray="3 3" stroke-opacity="0.5" />}
        </Svg>
      </div>
      <Readout hint={`${bins.length} bins · ${formatNumber(total)} in all${lo < 0 && hi > 0 ? " · dashed: zero residual" : ""}`}>
        {b && (
          <span>
            <span class="mono">{formatNumber(b.lo)}</span> to <span class="mono">{formatNumber(b.hi)}</span>:{" "}
            <strong class="mono">{formatNumber(b.count)}</strong>{total > 0 && <> · {pct(b.count / total)} of all</>}
          </span>
        )}
      </Readout>
    </TypedCard>
  );
}

// --- predictions ---------------------------------------------------------------------

function PredictionsChart({ predictions, ...card }: CardProps & { predictions: Predictions }) {
  const [box, width] = useWidth<HTMLDivElement>();
  const [hover, setHover] = useState<number | null>(null);
  const [svgRef, svgs] = useSvgs();
  const bins = useMemo(() => predictionBins(predictions), [predictions]);
  const filled = bins.filter((b) => b.count > 0);
  const w = Math.max(260, width || 480);
  const h = PLOT_HEIGHT;
  const m = { top: 10, right: 56, bottom: 44, left: 52 };
  const lo = bins[0].lo;
  const hi = Math.max(...bins.map((b) => b.hi));
  const x = linear([lo, hi === lo ? lo + 1 : hi], [m.left, w - m.right]);
  // The y range holds the predictions with their errors and the ideal line over x.
  const ys = [lo, hi, ...filled.flatMap((b) => [b.average - b.error, b.average + b.error])];
  const y = linear(niceDomain(Math.min(...ys), Math.max(...ys)), [h - m.bottom, m.top]);
  // Counts: bars along the bottom third, on their own axis (right).
  const most = Math.max(0, ...bins.map((b) => b.count));
  const maxCount = most > 0 ? niceDomain(0, most, 3)[1] : 1;
  const yCount = linear([0, maxCount * 3], [h - m.bottom, m.top]);
  const onMove = (px: number) => {
    const v = x.invert(px);
    const i = bins.findIndex((b) => v >= b.lo && v <= b.hi);
    setHover(i >= 0 ? i : null);
  };
  const b = hover === null ? null : bins[hover];
  const line = filled.map((bin, k) => `${k ? "L" : "M"}${x(bin.center).toFixed(1)},${y(bin.average).toFixed(1)}`).join("");
  const legend: LegendEntry[] = [
    { key: "avg", label: "average prediction ± error", color: ACCENT, fixed: true },
    { key: "ideal", label: "ideal (predicted = true)", color: "#94a3b8", dash: true, fixed: true },
    { key: "count", label: "samples per bin (right axis)", color: "#a5b4fc", fixed: true, bar: true },
  ];
  return (
    <TypedCard
      {...card}
      type="predictions"
      onPNG={() => void exportSvgPNG(card.name, svgs(), legend)}
      csv={() => predictionColumns(predictions)}
    >
      <div ref={box}>
        <Svg width={w} height={h} label={`Predicted against true values ${card.name}`} svgRef={svgRef(0)} onMove={onMove} onLeave={() => setHover(null)}>
          <Axes x={x} y={y} xLabel="True value" yLabel="Predicted value" yRight={{ scale: yCount, label: "Samples", ticks: [0, maxCount / 2, maxCount].filter((v, i, a) => a.indexOf(v) === i) }} />
          {bins.map((bin, i) => {
            const bx = x(bin.lo);
            const bw = Math.max(1, x(bin.hi) - bx);
            return (
              <rect key={`n${i}`} class="bar" x={bx + (bw > 4 ? 0.5 : 0)} y={yCount(bin.count)} width={bw > 4 ? bw - 1 : bw}
                height={Math.max(0, yCount(0) - yCount(bin.count))} fill="#c7d2fe" fill-opacity={hover === i ? 0.9 : 0.6} />
            );
          })}
          <line class="ideal" x1={x(lo)} y1={y(lo)} x2={x(hi)} y2={y(hi)} stroke="#94a3b8" stroke-dasharray="4 4" stroke-width="1.2" />
          <path d={line} fill="none" stroke={ACCENT} stroke-width="1.6" stroke-linejoin="round" />
          {filled.map((bin) => {
            const cx = x(bin.center);
            const i = bins.indexOf(bin);
            return (
              <g key={`p${i}`} class="prediction">
                {bin.error > 0 && (
                  <>
                    <line x1={cx} x2={cx} y1={y(bin.average - bin.error)} y2={y(bin.average + bin.error)} stroke={ACCENT} stroke-width="1.2" />
                    <line x1={cx - 4} x2={cx + 4} y1={y(bin.average - bin.error)} y2={y(bin.average - bin.error)} stroke={ACCENT} stroke-width="1.2" />
                    <line x1={cx - 4} x2={cx + 4} y1={y(bin.average + bin.error)} y2={y(bin.average + bin.error)} stroke={ACCENT} stroke-width="1.2" />
                  </>
                )}
                <circle cx={cx} cy={y(bin.average)} r={hover === i ? 5 : 3.5} fill="#ffffff" stroke={ACCENT} stroke-width="1.8" />
              </g>
            );
          })}
        </Svg>
      </div>
      <Readout hint={`${bins.length} bins of true values · ${formatNumber(bins.reduce((a, v) => a + v.count, 0))} samples`}>
        {b && (
          <span>
            True <span class="mono">{formatNumber(b.lo)}</span> to <span class="mono">{formatNumber(b.hi)}</span>:{" "}
            {b.count > 0 ? <>average prediction <strong class="mono">{formatNumber(b.average)}</strong> ± <span class="mono">{formatNumber(b.error)}</span> · </> : null}
            <span class="mono">{formatNumber(b.count)}</span> sample{b.count === 1 ? "" : "s"}
          </span>
        )}
      </Readout>
      <Legend entries={legend} />
    </TypedCard>
  );
}
