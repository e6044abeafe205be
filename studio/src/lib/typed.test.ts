import { describe, expect, it } from "vitest";
import {
  accuracyColumns, averagePrecision, classScores, confusionColumns, histogramBins, microCounts,
  normalizeRows, predictionBins, prCurves, rates, readTyped, rocCurves, trapezoid,
  type AccuracyTable, type Counts,
} from "./typed";
import { niceDomain, niceTicks } from "../chart/scale";

// azureml-core 1.60.0's docstring example (tests/unit/test_typed_metrics.py EXAMPLES).
const AZURE_TABLE: AccuracyTable = {
  class_labels: ["0", "1", "2"],
  probability_thresholds: [0.0, 0.25, 0.5, 0.75, 1.0],
  percentile_thresholds: [0.0, 0.01, 0.24, 0.98, 1.0],
  probability_tables: [
    [[82, 118, 0, 0], [75, 31, 87, 7], [66, 9, 109, 16], [46, 2, 116, 36], [0, 0, 118, 82]],
    [[60, 140, 0, 0], [56, 20, 120, 4], [47, 4, 136, 13], [28, 0, 140, 32], [0, 0, 140, 60]],
    [[58, 142, 0, 0], [53, 29, 113, 5], [40, 10, 132, 18], [24, 1, 141, 34], [0, 0, 142, 58]],
  ],
  percentile_tables: [
    [[82, 118, 0, 0], [82, 67, 51, 0], [75, 26, 92, 7], [48, 3, 115, 34], [3, 0, 118, 79]],
    [[60, 140, 0, 0], [60, 89, 51, 0], [60, 41, 99, 0], [46, 5, 135, 14], [3, 0, 140, 57]],
    [[58, 142, 0, 0], [56, 93, 49, 2], [54, 47, 95, 4], [41, 10, 132, 17], [3, 0, 142, 55]],
  ],
};

/** A binary problem where scores separate the classes perfectly / not at all. */
function binary(rows: Counts[], thresholds: number[]): AccuracyTable {
  return { class_labels: ["pos"], probability_thresholds: thresholds, percentile_thresholds: [0], probability_tables: [rows], percentile_tables: [[[0, 0, 0, 0]]] };
}

describe("rates", () => {
  it("gives TPR, FPR and precision from [TP, FP, TN, FN], null where undefined", () => {
    expect(rates([75, 31, 87, 7])).toEqual({ tpr: 75 / 82, fpr: 31 / 118, precision: 75 / 106 });
    expect(rates([0, 0, 118, 82])).toEqual({ tpr: 0, fpr: 0, precision: null });
    expect(rates([0, 5, 5, 0]).tpr).toBeNull();
  });
  it("sums counts over classes per threshold (micro)", () => {
    expect(microCounts(AZURE_TABLE.probability_tables, 5)[1]).toEqual([75 + 56 + 53, 31 + 20 + 29, 87 + 120 + 113, 7 + 4 + 5]);
  });
});

describe("ROC", () => {
  it("is the diagonal (AUC 0.5) for a useless classifier and a corner (AUC 1) for a perfect one", () => {
    // 10 positives, 10 negatives; thresholds 0, 0.5, 1.
    const perfect = rocCurves(binary([[10, 10, 0, 0], [10, 0, 10, 0], [0, 0, 10, 10]], [0, 0.5, 1]));
    expect(perfect).toHaveLength(1); // one class: no averages
    expect(perfect[0].points.map((p) => [p.x, p.y])).toEqual([[0, 0], [0, 1], [1, 1]]);
    expect(perfect[0].area).toBe(1);
    const useless = rocCurves(binary([[10, 10, 0, 0], [5, 5, 5, 5], [0, 0, 10, 10]], [0, 0.5, 1]));
    expect(useless[0].area).toBeCloseTo(0.5, 12);
  });

  it("adds the (0,0) and (1,1) ends when no threshold reaches them", () => {
    const [c] = rocCurves(binary([[8, 4, 6, 2]], [0.5]));
    expect(c.points.map((p) => [p.x, p.y, p.threshold])).toEqual([[0, 0, null], [0.4, 0.8, 0.5], [1, 1, null]]);
    expect(c.area).toBeCloseTo(0.5 * 0.4 * 0.8 + 0.6 * 0.9, 12);
  });

  it("draws each class of Azure's example, then micro and macro averages", () => {
    const curves = rocCurves(AZURE_TABLE);
    expect(curves.map((c) => c.label)).toEqual(["0", "1", "2", "micro average", "macro average"]);
    const c0 = curves[0];
    // Thresholds 1 → 0: (0,0), (2/118, 46/82), (9/118, 66/82), (31/118, 75/82), (1,1).
    expect(c0.points.map((p) => p.threshold)).toEqual([1, 0.75, 0.5, 0.25, 0]);
    expect(c0.points[1].x).toBeCloseTo(2 / 118, 12);
    expect(c0.points[1].y).toBeCloseTo(46 / 82, 12);
    const expected = trapezoid(c0.points);
    expect(c0.area).toBeCloseTo(expected, 12);
    expect(c0.area!).toBeGreaterThan(0.85);
    expect(c0.area!).toBeLessThan(1);
    for (const c of curves) {
      const xs = c.points.map((p) => p.x);
      expect([...xs].sort((a, b) => a - b)).toEqual(xs); // drawn left to right
    }
    const micro = curves[3].points.find((p) => p.threshold === 0.5)!;
    expect(micro.x).toBeCloseTo((9 + 4 + 10) / (118 + 140 + 142), 12);
    expect(micro.y).toBeCloseTo((66 + 47 + 40) / (82 + 60 + 58), 12);
    const macro = curves[4].points.find((p) => p.threshold === 0.5)!;
    expect(macro.y).toBeCloseTo((66 / 82 + 47 / 60 + 40 / 58) / 3, 12);
  });

  it("leaves out a class with no positives", () => {
    const [c] = rocCurves(binary([[0, 10, 0, 0], [0, 0, 10, 0]], [0, 1]));
    expect(c.points).toEqual([]);
    expect(c.area).toBeNull();
  });
});

describe("precision–recall", () => {
  it("orders points by recall, skips thresholds with nothing predicted, and gives the average precision", () => {
    const [c] = prCurves(binary([[10, 10, 0, 0], [8, 2, 8, 2], [4, 0, 10, 6], [0, 0, 10, 10]], [0, 0.4, 0.8, 1]));
    expect(c.points.map((p) => [p.x, p.y, p.threshold])).toEqual([[0.4, 1, 0.8], [0.8, 0.8, 0.4], [1, 0.5, 0]]);
    // scikit-learn's AP: Σ (R_k − R_{k−1}) P_k = 0.4·1 + 0.4·0.8 + 0.2·0.5
    expect(c.area).toBeCloseTo(0.82, 12);
    expect(averagePrecision([])).toBeNull();
  });
  it("averages Azure's example too", () => {
    const curves = prCurves(AZURE_TABLE);
    expect(curves.map((c) => c.kind)).toEqual(["class", "class", "class", "micro", "macro"]);
    // Threshold 1 predicts nothing positive: no precision, no point.
    expect(curves[0].points.some((p) => p.threshold === 1)).toBe(false);
    const last = curves[0].points[curves[0].points.length - 1];
    expect([last.x, last.y]).toEqual([1, 82 / 200]); // threshold 0: recall 1, precision = prevalence
  });
});

describe("confusion matrix", () => {
  const cm = { class_labels: ["cat", "dog", 3], matrix: [[8, 2, 0], [1, 6, 3], [0, 0, 0]] };
  it("normalises rows (true classes); an empty row stays 0", () => {
    expect(normalizeRows(cm.matrix)).toEqual([[0.8, 0.2, 0], [0.1, 0.6, 0.3], [0, 0, 0]]);
  });
  it("scores each class and the whole", () => {
    const s = classScores(cm);
    expect(s.total).toBe(20);
    expect(s.accuracy).toBe(14 / 20);
    expect(s.classes[0]).toEqual({ label: "cat", precision: 8 / 9, recall: 0.8, f1: (2 * (8 / 9) * 0.8) / (8 / 9 + 0.8), support: 10 });
    expect(s.classes[2]).toEqual({ label: "3", precision: 0, recall: null, f1: null, support: 0 });
  });
  it("writes CSV columns with the labels", () => {
    const c = confusionColumns(cm);
    expect(c.header).toEqual(["true \\ predicted", "cat", "dog", "3"]);
    expect(c.columns[0]).toEqual(["cat", "dog", "3"]);
    expect(c.columns[2]).toEqual([2, 6, 0]);
  });
});

describe("residuals and predictions", () => {
  it("makes bins from edges and counts, ordered", () => {
    expect(histogramBins({ bin_edges: [50, 100, 200, 300, 350], bin_counts: [0.88, 20, 30, 50.99] })).toEqual([
      { lo: 50, hi: 100, count: 0.88 }, { lo: 100, hi: 200, count: 20 }, { lo: 200, hi: 300, count: 30 }, { lo: 300, hi: 350, count: 50.99 },
    ]);
    expect(histogramBins({ bin_edges: [1, 0, -1], bin_counts: [3, 4] }).map((b) => [b.lo, b.hi, b.count])).toEqual([[-1, 0, 4], [0, 1, 3]]);
  });
  it("puts predictions at the centre of their bin of true values", () => {
    const bins = predictionBins({ bin_averages: [0.25, 0.75], bin_errors: [0.013, -0.042], bin_counts: [56, 34], bin_edges: [0, 0.5, 1] });
    expect(bins).toEqual([
      { lo: 0, hi: 0.5, count: 56, center: 0.25, average: 0.25, error: 0.013 },
      { lo: 0.5, hi: 1, count: 34, center: 0.75, average: 0.75, error: 0.042 },
    ]);
  });
});

describe("readTyped", () => {
  it("reads each schema type and says what is wrong with a document that does not fit", () => {
    const ok = readTyped("residuals", { schema_type: "residuals", data: { bin_edges: [0, 1], bin_counts: [2] } });
    expect(ok).toEqual({ type: "residuals", data: { bin_edges: [0, 1], bin_counts: [2] } });
    expect(readTyped("accuracy_table", { data: AZURE_TABLE })).toMatchObject({ type: "accuracy_table" });
    const bad = readTyped("confusion_matrix", { data: { class_labels: ["a", "b"], matrix: [[1, 2]] } });
    expect(bad).toBeInstanceOf(Error);
    expect((bad as Error).message).toMatch(/a row per class label/);
    expect((readTyped("predictions", { data: { bin_counts: [1], bin_averages: [1], bin_errors: [0], bin_edges: [0] } }) as Error).message).toMatch(/bin_edges has 1 items, not 2/);
    expect((readTyped("lift_curve", { data: {} }) as Error).message).toMatch(/does not draw/);
    expect(readTyped("residuals", [1])).toBeInstanceOf(Error);
  });
  it("writes the accuracy table as CSV rows with rates", () => {
    const c = accuracyColumns(AZURE_TABLE);
    expect(c.header).toEqual(["class", "threshold_kind", "threshold", "TP", "FP", "TN", "FN", "TPR", "FPR", "precision"]);
    expect(c.columns[0]).toHaveLength(30); // 3 classes × 5 thresholds × 2 kinds
    expect(c.columns.map((col) => col[1])).toEqual(["0", "probability", 0.25, 75, 31, 87, 7, 75 / 82, 31 / 118, 75 / 106]);
  });
});

describe("scales", () => {
  it("makes round ticks and domains", () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(-3.2, 47, 5)).toEqual([0, 10, 20, 30, 40]);
    expect(niceTicks(0.1, 0.3, 2)).toEqual([0.1, 0.2, 0.3]);
    expect(niceTicks(5, 5)).toEqual([5]);
    expect(niceDomain(0, 87)).toEqual([0, 100]);
    expect(niceDomain(-0.013, 1.042)).toEqual([-0.2, 1.2]);
    expect(niceDomain(3, 3)).toEqual([2.7, 3.3]);
  });
});
