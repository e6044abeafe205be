import { describe, expect, it } from "vitest";
import type { SeriesDoc } from "../lib/api";
import { align, ema, lastLine, linesOf, toCSV } from "./series";

const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

describe("linesOf", () => {
  it("draws exact points of one rank as one line over step", () => {
    const doc: SeriesDoc = {
      name: "loss", run_id: "r", total_points: 3, downsampled: false,
      points: [
        { step: 0, value: 1, rank: 0, time: t(0) },
        { step: 1, value: "NaN", rank: 0, time: t(1) },
        { step: 2, value: 0.5, rank: 0, time: t(2) },
      ],
    };
    const [line] = linesOf(doc, "step");
    expect(line.x).toEqual([0, 1, 2]);
    expect(line.y).toEqual([1, null, 0.5]);
    expect(linesOf(doc, "relative")[0].x).toEqual([0, 1, 2]);
  });

  it("splits ranks into lines", () => {
    const doc: SeriesDoc = {
      name: "loss", run_id: "r", total_points: 2, downsampled: false,
      points: [
        { step: 0, value: 1, rank: 0, time: t(0) },
        { step: 0, value: 2, rank: 1, time: t(0) },
      ],
    };
    expect(linesOf(doc, "step").map((l) => l.label)).toEqual(["loss · rank 0", "loss · rank 1"]);
  });

  it("keeps both spikes of downsampled buckets in the band", () => {
    const doc: SeriesDoc = {
      name: "x", run_id: "r", total_points: 3000, downsampled: true,
      buckets: [
        { step_min: 0, step_max: 999, count: 1000, min: -1e6, max: 1, last: 0.5, first_time: t(0), last_time: t(1) },
        { step_min: 1000, step_max: 1999, count: 1000, min: 0, max: 1, last: 0.4, first_time: t(1), last_time: t(2) },
        { step_min: 2000, step_max: 2999, count: 1000, min: 0, max: 1e6, last: 0.3, first_time: t(2), last_time: t(3) },
      ],
    };
    const [line] = linesOf(doc, "step");
    expect(line.x).toEqual([0, 999, 1000, 1999, 2000, 2999]);
    expect(line.y).toEqual([null, 0.5, null, 0.4, null, 0.3]);
    expect(Math.min(...(line.band!.min as number[]))).toBe(-1e6);
    expect(Math.max(...(line.band!.max as number[]))).toBe(1e6);
    expect(lastLine(doc, "step", "run").y).toEqual([0.5, 0.4, 0.3]);
  });
});

describe("ema", () => {
  it("is the raw series at weight 0 and debiased otherwise", () => {
    expect(ema([1, 2, 3], 0)).toEqual([1, 2, 3]);
    const s = ema([2, 2, 2], 0.9);
    s.forEach((v) => expect(v).toBeCloseTo(2));
    expect(ema([1, null, 3], 0.5)[1]).toBeNull();
  });
});

describe("align and CSV", () => {
  it("aligns lines on the union of x", () => {
    const a = align([
      { label: "a", x: [0, 2], y: [1, 3] },
      { label: "b", x: [1, 2], y: [5, 6] },
    ]);
    expect(a.x).toEqual([0, 1, 2]);
    expect(a.columns).toEqual([[1, null, 3], [null, 5, 6]]);
  });
  it("quotes CSV cells", () => {
    expect(toCSV(["step", 'a,"b"'], [[0, 1], [1.5, null]])).toBe('step,"a,""b"""\n0,1.5\n1,\n');
  });
});

describe("epochSeconds", () => {
  it("keeps the microseconds", async () => {
    const { epochSeconds } = await import("./series");
    const a = epochSeconds("2026-12-02T15:27:06.920479+00:00");
    const b = epochSeconds("2026-12-02T15:27:06.920528+00:00");
    expect(b - a).toBeCloseTo(49e-6, 6); // a double holds ~0.25 µs at today's epoch seconds
  });
});

describe("format=columns", () => {
  const us = (s: number) => Date.UTC(2026, 0, 1, 0, 0, s) * 1000;
  it("draws the same lines as the objects it stands for", async () => {
    const { fromColumns } = await import("../lib/api");
    const objects: SeriesDoc = {
      name: "loss", run_id: "r", total_points: 30, downsampled: true,
      buckets: [
        { step_min: 0, step_max: 9, count: 10, min: 0.5, max: 2, last: 1, first_time: t(0), last_time: t(9) },
        { step_min: 10, step_max: 19, count: 10, min: "NaN", max: 1e6, last: 0.25, first_time: t(10), last_time: t(19) },
      ],
    };
    const columns = fromColumns({
      name: "loss", run_id: "r", total_points: 30, downsampled: true,
      columns: {
        step_min: [0, 10], step_max: [9, 19], count: [10, 10], min: [0.5, "NaN"], max: [2, 1e6],
        last: [1, 0.25], first_time_us: [us(0), us(10)], last_time_us: [us(9), us(19)],
      },
    });
    for (const mode of ["step", "relative", "wall"] as const) {
      expect(linesOf(columns, mode)).toEqual(linesOf(objects, mode));
    }
    const points = fromColumns({
      name: "acc", run_id: "r", total_points: 2, downsampled: false,
      columns: { step: [0, 1], value: [0.5, { str: "NaN" }], rank: [0, 0], time_us: [us(3), us(5)] },
    });
    expect(linesOf(points, "relative")[0]).toEqual({ label: "acc", x: [0, 2], y: [0.5, null] });
  });
});
