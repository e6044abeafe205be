import { describe, expect, it } from "vitest";
import { formatDuration, formatNumber, numeric } from "./format";
import { match } from "./router";
import { summarize } from "./metrics";

describe("format", () => {
  it("formats durations and numbers", () => {
    expect(formatDuration(0.25)).toBe("250 ms");
    expect(formatDuration(65)).toBe("1m 05s");
    expect(formatDuration(3 * 3600 + 120)).toBe("3h 02m");
    expect(formatNumber(1234567)).toBe("1,234,567");
    expect(formatNumber(0.000012345)).toBe("1.2345e-5");
    expect(numeric("Infinity")).toBeNull();
    expect(numeric(2)).toBe(2);
  });
  it("summarizes series", () => {
    expect(summarize([3, 1, "NaN", 2])).toEqual({ last: 2, min: 1, max: 3, count: 4 });
    expect(summarize({ a: [1] })).toBeNull();
  });
});

describe("routes", () => {
  it("matches every page", () => {
    expect(match("/")).toEqual({ page: "experiments" });
    expect(match("/experiments/my%20exp")).toEqual({ page: "experiment", name: "my exp" });
    expect(match("/runs/abc_123")).toEqual({ page: "run", runId: "abc_123" });
    expect(match("/compute")).toEqual({ page: "compute" });
    expect(match("/compute/gpu")).toEqual({ page: "target", target: "gpu" });
    expect(match("/models/m")).toEqual({ page: "model", name: "m" });
    expect(match("/nope")).toEqual({ page: "notfound" });
  });
});
