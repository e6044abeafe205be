import { describe, expect, it } from "vitest";
import { formatDuration, formatNumber, formatScalar, formatValue, isSpelledString, numeric, scalarType, valueType } from "./format";
import { match } from "./router";
import { kindOf, summarize, tableColumns } from "./metrics";
import { fromMetricsDoc } from "./metricIndex";

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

describe("strings spelled like non-finite floats", () => {
  // The API writes a string value "NaN" as {"str": "NaN"}; the bare strings are floats.
  it("shows {str} as the plain string, and the bare spellings as non-finite numbers", () => {
    expect(formatValue({ str: "NaN" })).toBe("NaN");
    expect(formatValue({ str: "-Infinity" })).toBe("-Infinity");
    expect(formatValue({ str: "" })).toBe("");
    expect(formatValue("NaN")).toBe("NaN");
    expect(formatValue("Infinity")).toBe("∞");
    expect(formatValue("-Infinity")).toBe("−∞");
    expect(formatValue("warm start")).toBe("warm start");
    expect(valueType({ str: "Infinity" })).toBe("string");
    expect(valueType("Infinity")).toBe("number");
    expect(valueType("hello")).toBe("string");
    expect(valueType(null)).toBe("null");
  });
  it("never charts them, never takes them for a table", () => {
    expect(numeric({ str: "NaN" })).toBeNull();
    expect(isSpelledString({ str: "NaN" })).toBe(true);
    expect(isSpelledString({ str: ["NaN"] })).toBe(false); // a table with a column "str"
    expect(isSpelledString({ str: "x", other: "y" })).toBe(false);
    expect(kindOf({ str: "NaN" })).toBe("value");
    expect(kindOf({ str: ["NaN", 1] })).toBe("table");
    expect(summarize({ str: "NaN" })).toEqual({ last: { str: "NaN" }, min: null, max: null, count: 1 });
    expect(summarize([1, { str: "Infinity" }, 3])).toEqual({ last: 3, min: 1, max: 3, count: 3 });
    expect(tableColumns({ x: [1, 2], note: [{ str: "NaN" }, "a"], y: [{ str: "NaN" }, 2] })).toEqual({ x: "x", ys: ["y"] });
    const index = fromMetricsDoc({ metrics: { note: { str: "NaN" }, notes: ["a", { str: "Infinity" }] } });
    const by = Object.fromEntries(index.metrics.map((e) => [e.name, e]));
    expect(by.note).toMatchObject({ kind: "value", count: 1, last: { str: "NaN" } });
    expect(by.notes).toMatchObject({ kind: "list_or_series", count: 2 });
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

describe("tag and property values", () => {
  // Typed since event schema v3: numbers and booleans as given, text as text, exactly.
  it("writes numbers exactly, booleans as true/false and text as itself", () => {
    expect(formatScalar(0.0003)).toBe("0.0003");
    expect(formatScalar(10)).toBe("10");
    expect(formatScalar(1e-7)).toBe("1e-7");
    expect(formatScalar(true)).toBe("true");
    expect(formatScalar(false)).toBe("false");
    expect(formatScalar("NaN")).toBe("NaN");
    expect(formatScalar("10")).toBe("10");
    expect(formatScalar(null)).toBe("");
    expect(scalarType(0.1)).toBe("number");
    expect(scalarType(false)).toBe("boolean");
    expect(scalarType("0.1")).toBeNull();
    expect(scalarType(null)).toBeNull();
  });
});
