// Azure ML's typed metrics (run.log_confusion_matrix, log_accuracy_table, log_residuals,
// log_predictions): the JSON documents the SDK stores (producer/_typed_metrics.py checks
// them at the call site), read back as the file of the metric's name, and what the run
// page draws from them — a heatmap, ROC and precision–recall curves, a histogram and
// predicted-vs-true bins, as Azure ML studio does.

export type Label = string | number;

export interface ConfusionMatrix {
  class_labels: Label[];
  matrix: number[][];
}

/** [TP, FP, TN, FN] at one threshold, for one class (one-vs-rest). */
export type Counts = [number, number, number, number];

export interface AccuracyTable {
  class_labels: Label[];
  probability_thresholds: number[];
  percentile_thresholds: number[];
  /** [class][threshold] → [TP, FP, TN, FN] */
  probability_tables: Counts[][];
  percentile_tables: Counts[][];
}

export interface Residuals {
  bin_edges: number[];
  bin_counts: number[];
}

export interface Predictions {
  bin_averages: number[];
  bin_errors: number[];
  bin_counts: number[];
  bin_edges: number[];
}

export type TypedDoc =
  | { type: "confusion_matrix"; data: ConfusionMatrix }
  | { type: "accuracy_table"; data: AccuracyTable }
  | { type: "residuals"; data: Residuals }
  | { type: "predictions"; data: Predictions };

export const TYPED_KINDS: Record<TypedDoc["type"], string> = {
  confusion_matrix: "confusion matrix",
  accuracy_table: "accuracy table",
  residuals: "residuals",
  predictions: "predictions",
};

// --- reading a stored document ----------------------------------------------------------

class ShapeError extends Error {}

function isNumber(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

function numbers(data: Record<string, unknown>, key: string, length?: number): number[] {
  const v = data[key];
  if (!Array.isArray(v)) throw new ShapeError(`data.${key} is missing or not a list`);
  if (length !== undefined && v.length !== length) throw new ShapeError(`data.${key} has ${v.length} items, not ${length}`);
  if (!v.every(isNumber)) throw new ShapeError(`data.${key} holds something other than numbers`);
  return v;
}

function labels(data: Record<string, unknown>): Label[] {
  const v = data.class_labels;
  if (!Array.isArray(v) || v.length === 0) throw new ShapeError("data.class_labels is missing or empty");
  if (!v.every((l) => typeof l === "string" || isNumber(l))) throw new ShapeError("data.class_labels holds something other than strings and numbers");
  return v as Label[];
}

function tables(data: Record<string, unknown>, key: string, classes: number, thresholds: number): Counts[][] {
  const v = data[key];
  const shape = `[${classes}][${thresholds}][4]`;
  if (!Array.isArray(v) || v.length !== classes) throw new ShapeError(`data.${key} is not of shape ${shape}`);
  for (const table of v) {
    if (!Array.isArray(table) || table.length !== thresholds) throw new ShapeError(`data.${key} is not of shape ${shape}`);
    for (const row of table) {
      if (!Array.isArray(row) || row.length !== 4 || !row.every((n) => isNumber(n) && n >= 0)) {
        throw new ShapeError(`data.${key} has a row that is not [TP, FP, TN, FN]`);
      }
    }
  }
  return v as Counts[][];
}

/**
 * A stored typed metric as the studio draws it, or an Error saying what is wrong with it
 * (a document written by something other than this SDK may not fit its schema type).
 */
export function readTyped(schemaType: string, document: unknown): TypedDoc | Error {
  try {
    if (document === null || typeof document !== "object" || Array.isArray(document)) throw new ShapeError("the document is not a JSON object");
    const data = (document as { data?: unknown }).data;
    if (data === null || typeof data !== "object" || Array.isArray(data)) throw new ShapeError("data is missing or not an object");
    const d = data as Record<string, unknown>;
    switch (schemaType) {
      case "confusion_matrix": {
        const classes = labels(d);
        const m = d.matrix;
        if (!Array.isArray(m) || m.length !== classes.length) throw new ShapeError(`data.matrix does not have a row per class label (${classes.length})`);
        const matrix = m.map((row, i) => {
          if (!Array.isArray(row) || row.length !== classes.length || !row.every(isNumber)) throw new ShapeError(`data.matrix[${i}] is not ${classes.length} numbers`);
          return row as number[];
        });
        return { type: "confusion_matrix", data: { class_labels: classes, matrix } };
      }
      case "accuracy_table": {
        const classes = labels(d);
        const pt = numbers(d, "probability_thresholds");
        const ct = numbers(d, "percentile_thresholds");
        return {
          type: "accuracy_table",
          data: {
            class_labels: classes,
            probability_thresholds: pt,
            percentile_thresholds: ct,
            probability_tables: tables(d, "probability_tables", classes.length, pt.length),
            percentile_tables: tables(d, "percentile_tables", classes.length, ct.length),
          },
        };
      }
      case "residuals": {
        const counts = numbers(d, "bin_counts");
        return { type: "residuals", data: { bin_counts: counts, bin_edges: numbers(d, "bin_edges", counts.length + 1) } };
      }
      case "predictions": {
        const counts = numbers(d, "bin_counts");
        return {
          type: "predictions",
          data: {
            bin_counts: counts,
            bin_averages: numbers(d, "bin_averages", counts.length),
            bin_errors: numbers(d, "bin_errors", counts.length),
            bin_edges: numbers(d, "bin_edges", counts.length + 1),
          },
        };
      }
      default:
        throw new ShapeError(`the studio does not draw the schema type “${schemaType}”`);
    }
  } catch (err) {
    if (err instanceof ShapeError) return new Error(err.message);
    throw err;
  }
}

// --- confusion matrix -----------------------------------------------------------------

const rate = (num: number, den: number): number | null => (den > 0 ? num / den : null);

function labelOf(l: Label): string {
  return String(l);
}

/** Each row (a true class) as fractions of its total; a row with no samples stays 0. */
export function normalizeRows(matrix: number[][]): number[][] {
  return matrix.map((row) => {
    const total = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (total > 0 ? v / total : 0));
  });
}

export interface ClassScores {
  label: string;
  precision: number | null;
  recall: number | null;
  f1: number | null;
  /** Samples of this true class (its row's total). */
  support: number;
}

/** Per class (rows: true, columns: predicted): precision, recall, F1, support; and accuracy. */
export function classScores(cm: ConfusionMatrix): { classes: ClassScores[]; accuracy: number | null; total: number } {
  const n = cm.class_labels.length;
  let total = 0;
  let correct = 0;
  const classes = cm.class_labels.map((label, i) => {
    const support = cm.matrix[i].reduce((a, b) => a + b, 0);
    let predicted = 0;
    for (let r = 0; r < n; r++) predicted += cm.matrix[r][i];
    const hit = cm.matrix[i][i];
    total += support;
    correct += hit;
    const precision = rate(hit, predicted);
    const recall = rate(hit, support);
    const f1 = precision !== null && recall !== null ? (precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0) : null;
    return { label: labelOf(label), precision, recall, f1, support };
  });
  return { classes, accuracy: rate(correct, total), total };
}

// --- accuracy table: ROC and precision–recall ------------------------------------------

export interface CurvePoint {
  x: number;
  y: number;
  /** The probability threshold of this point (null: an end point added at (0,0)/(1,1)). */
  threshold: number | null;
}

export interface Curve {
  label: string;
  kind: "class" | "micro" | "macro";
  points: CurvePoint[];
  /** ROC: the area under the curve; precision–recall: the average precision. */
  area: number | null;
}

/** True positive rate (recall), false positive rate and precision of one row. */
export function rates([tp, fp, tn, fn]: Counts): { tpr: number | null; fpr: number | null; precision: number | null } {
  return { tpr: rate(tp, tp + fn), fpr: rate(fp, fp + tn), precision: rate(tp, tp + fp) };
}

/** Per threshold, the counts of every class summed (micro average). */
export function microCounts(tables: Counts[][], thresholds: number): Counts[] {
  return Array.from({ length: thresholds }, (_, m) => {
    const sum: Counts = [0, 0, 0, 0];
    for (const table of tables) for (let k = 0; k < 4; k++) sum[k] += table[m][k];
    return sum;
  });
}

/** Trapezoidal area under points sorted by x. */
export function trapezoid(points: { x: number; y: number }[]): number {
  let area = 0;
  for (let i = 1; i < points.length; i++) area += ((points[i].x - points[i - 1].x) * (points[i].y + points[i - 1].y)) / 2;
  return area;
}

function sortRoc(points: CurvePoint[]): CurvePoint[] {
  // Along the curve: FPR and TPR both grow as the threshold falls.
  const sorted = [...points].sort((a, b) => a.x - b.x || a.y - b.y || (b.threshold ?? 0) - (a.threshold ?? 0));
  const first = sorted[0];
  const last = sorted[sorted.length - 1];
  if (!first || first.x !== 0 || first.y !== 0) sorted.unshift({ x: 0, y: 0, threshold: null });
  if (!last || last.x !== 1 || last.y !== 1) sorted.push({ x: 1, y: 1, threshold: null });
  return sorted;
}

function rocOf(rows: Counts[], thresholds: number[]): CurvePoint[] {
  const points: CurvePoint[] = [];
  rows.forEach((row, m) => {
    const r = rates(row);
    if (r.tpr !== null && r.fpr !== null) points.push({ x: r.fpr, y: r.tpr, threshold: thresholds[m] });
  });
  return points;
}

function prOf(rows: Counts[], thresholds: number[]): CurvePoint[] {
  const points: CurvePoint[] = [];
  rows.forEach((row, m) => {
    const r = rates(row);
    if (r.tpr !== null && r.precision !== null) points.push({ x: r.tpr, y: r.precision, threshold: thresholds[m] });
  });
  // Recall grows as the threshold falls: in that order (ties: the higher threshold first).
  return points.sort((a, b) => a.x - b.x || (b.threshold ?? 0) - (a.threshold ?? 0));
}

/** Average precision: Σ (R_k − R_{k−1}) · P_k over points by growing recall (scikit-learn's). */
export function averagePrecision(points: CurvePoint[]): number | null {
  if (points.length === 0) return null;
  let ap = 0;
  let previous = 0;
  for (const p of points) {
    ap += (p.x - previous) * p.y;
    previous = p.x;
  }
  return ap;
}

function mean(values: (number | null)[]): number | null {
  const defined = values.filter((v): v is number => v !== null);
  return defined.length ? defined.reduce((a, b) => a + b, 0) / defined.length : null;
}

/**
 * ROC curves (x = false positive rate, y = true positive rate) from the probability
 * tables: one per class (one-vs-rest), then the micro average (counts summed over classes
 * per threshold) and the macro average (per-class rates averaged per threshold), each
 * with its area. A class without positives (or negatives) has no curve (area null).
 */
export function rocCurves(t: AccuracyTable): Curve[] {
  const thresholds = t.probability_thresholds;
  const out: Curve[] = t.class_labels.map((label, c) => {
    const raw = rocOf(t.probability_tables[c], thresholds);
    const points = raw.length ? sortRoc(raw) : [];
    return { label: labelOf(label), kind: "class", points, area: points.length ? trapezoid(points) : null };
  });
  if (t.class_labels.length > 1) {
    const micro = sortRoc(rocOf(microCounts(t.probability_tables, thresholds.length), thresholds));
    out.push({ label: "micro average", kind: "micro", points: micro, area: trapezoid(micro) });
    const macroRaw: CurvePoint[] = [];
    thresholds.forEach((threshold, m) => {
      const r = t.probability_tables.map((table) => rates(table[m]));
      const x = mean(r.map((v) => v.fpr));
      const y = mean(r.map((v) => v.tpr));
      if (x !== null && y !== null) macroRaw.push({ x, y, threshold });
    });
    const macro = sortRoc(macroRaw);
    out.push({ label: "macro average", kind: "macro", points: macro, area: trapezoid(macro) });
  }
  return out;
}

/**
 * Precision–recall curves (x = recall, y = precision) from the probability tables, per
 * class, micro and macro averaged like rocCurves, each with its average precision. A
 * threshold at which nothing is predicted positive has no precision and is left out.
 */
export function prCurves(t: AccuracyTable): Curve[] {
  const thresholds = t.probability_thresholds;
  const out: Curve[] = t.class_labels.map((label, c) => {
    const points = prOf(t.probability_tables[c], thresholds);
    return { label: labelOf(label), kind: "class", points, area: averagePrecision(points) };
  });
  if (t.class_labels.length > 1) {
    const micro = prOf(microCounts(t.probability_tables, thresholds.length), thresholds);
    out.push({ label: "micro average", kind: "micro", points: micro, area: averagePrecision(micro) });
    const macro: CurvePoint[] = [];
    thresholds.forEach((threshold, m) => {
      const r = t.probability_tables.map((table) => rates(table[m]));
      const x = mean(r.map((v) => v.tpr));
      const y = mean(r.map((v) => v.precision));
      if (x !== null && y !== null) macro.push({ x, y, threshold });
    });
    macro.sort((a, b) => a.x - b.x || (b.threshold ?? 0) - (a.threshold ?? 0));
    out.push({ label: "macro average", kind: "macro", points: macro, area: averagePrecision(macro) });
  }
  return out;
}

// --- residuals and predictions --------------------------------------------------------

export interface Bin {
  lo: number;
  hi: number;
  count: number;
}

/** The histogram's bins, ordered by their lower edge. */
export function histogramBins(r: Residuals): Bin[] {
  return r.bin_counts
    .map((count, i) => ({ lo: Math.min(r.bin_edges[i], r.bin_edges[i + 1]), hi: Math.max(r.bin_edges[i], r.bin_edges[i + 1]), count }))
    .sort((a, b) => a.lo - b.lo);
}

export interface PredictionBin extends Bin {
  /** The middle of the bin of true values. */
  center: number;
  average: number;
  error: number;
}

export function predictionBins(p: Predictions): PredictionBin[] {
  return p.bin_counts
    .map((count, i) => {
      const lo = Math.min(p.bin_edges[i], p.bin_edges[i + 1]);
      const hi = Math.max(p.bin_edges[i], p.bin_edges[i + 1]);
      return { lo, hi, count, center: (lo + hi) / 2, average: p.bin_averages[i], error: Math.abs(p.bin_errors[i]) };
    })
    .sort((a, b) => a.lo - b.lo);
}

// --- CSV ---------------------------------------------------------------------------------

/** Columns (header + one array per column) for toCSV. */
export interface Columns {
  header: string[];
  columns: (number | string | null)[][];
}

export function confusionColumns(cm: ConfusionMatrix): Columns {
  const names = cm.class_labels.map(labelOf);
  return {
    header: ["true \\ predicted", ...names],
    columns: [names, ...names.map((_, j) => cm.matrix.map((row) => row[j]))],
  };
}

export function accuracyColumns(t: AccuracyTable): Columns {
  const cols: (number | string | null)[][] = [[], [], [], [], [], [], [], [], [], []];
  const add = (kind: string, thresholds: number[], tablesOf: Counts[][]) => {
    t.class_labels.forEach((label, c) => {
      thresholds.forEach((threshold, m) => {
        const row = tablesOf[c][m];
        const r = rates(row);
        [labelOf(label), kind, threshold, ...row, r.tpr, r.fpr, r.precision].forEach((v, k) => cols[k].push(v));
      });
    });
  };
  add("probability", t.probability_thresholds, t.probability_tables);
  add("percentile", t.percentile_thresholds, t.percentile_tables);
  return { header: ["class", "threshold_kind", "threshold", "TP", "FP", "TN", "FN", "TPR", "FPR", "precision"], columns: cols };
}

export function residualColumns(r: Residuals): Columns {
  const bins = histogramBins(r);
  return { header: ["bin_start", "bin_end", "count"], columns: [bins.map((b) => b.lo), bins.map((b) => b.hi), bins.map((b) => b.count)] };
}

export function predictionColumns(p: Predictions): Columns {
  const bins = predictionBins(p);
  return {
    header: ["true_bin_start", "true_bin_end", "average_prediction", "error", "count"],
    columns: [bins.map((b) => b.lo), bins.map((b) => b.hi), bins.map((b) => b.average), bins.map((b) => b.error), bins.map((b) => b.count)],
  };
}
