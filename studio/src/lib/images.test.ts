import { describe, expect, it } from "vitest";
import type { RunFile } from "./api";
import { imageSeries } from "./images";

function file(name: string, kind: string, image: string | null = null, step: number | null = null): RunFile {
  return { name, kind, sha256: "0".repeat(64), size_bytes: 1, content_type: "image/png", created_at: "", metric: null, image, step };
}

describe("imageSeries", () => {
  it("groups images per name, steps in ascending order, files left out", () => {
    const series = imageSeries([
      file("loss/step_10.png", "IMAGE", "loss", 10),
      file("outputs/model.pkl", "FILE"),
      file("loss/step_2.png", "IMAGE", "loss", 2),
      file("digits/step_-1.png", "IMAGE", "digits", -1),
      file("loss/step_0.png", "IMAGE", "loss", 0),
      file("old", "IMAGE", "old", null),
    ]);
    expect(series.map((s) => s.name)).toEqual(["digits", "loss", "old"]);
    expect(series[1].steps.map((s) => s.step)).toEqual([0, 2, 10]);
    expect(series[1].steps.map((s) => s.file.name)).toEqual(["loss/step_0.png", "loss/step_2.png", "loss/step_10.png"]);
    expect(series[0].steps[0].step).toBe(-1);
    expect(series[2].steps).toEqual([{ step: null, file: file("old", "IMAGE", "old", null) }]);
  });
  it("reads files of an API without image fields by their name", () => {
    const f: RunFile = { name: "ROC", kind: "IMAGE", sha256: "", size_bytes: 1, content_type: "image/png", created_at: "", metric: null };
    expect(imageSeries([f])).toEqual([{ name: "ROC", steps: [{ step: null, file: f }] }]);
  });
});
