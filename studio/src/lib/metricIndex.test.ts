import { describe, expect, it } from "vitest";
import { fromMetricsDoc } from "./metricIndex";

describe("fromMetricsDoc", () => {
  it("classifies what the metrics dict holds", () => {
    const index = fromMetricsDoc({
      metrics: { loss: [3, 1, 2], alpha: 0.5, note: "hi", roc: { fpr: [0, 1], tpr: [0, 1] } },
    });
    const by = Object.fromEntries(index.metrics.map((e) => [e.name, e]));
    expect(index.indexed).toBe(false);
    expect(by.loss).toMatchObject({ kind: "list_or_series", count: 3, last: 2, min: 1, max: 3 });
    expect(by.alpha).toMatchObject({ kind: "value", count: 1, last: 0.5 });
    expect(by.note).toMatchObject({ kind: "value", last: "hi", min: null });
    expect(by.roc).toMatchObject({ kind: "table", count: 2 });
  });
});
