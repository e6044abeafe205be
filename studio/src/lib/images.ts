// log_image keeps every step: step s of image n is the file n/step_s.ext, which the API
// lists with its image name and step. Here the files are grouped per image, by step.
import type { RunFile } from "./api";

export interface ImageStep {
  /** The step (null: an image stored before steps were kept, shown first). */
  step: number | null;
  file: RunFile;
}

export interface ImageSeries {
  name: string;
  steps: ImageStep[];
}

/** The run's images grouped by name (sorted), each name's steps in ascending order. */
export function imageSeries(files: RunFile[]): ImageSeries[] {
  const byName = new Map<string, ImageStep[]>();
  for (const file of files) {
    if (file.kind !== "IMAGE") continue;
    const name = file.image ?? file.name;
    const steps = byName.get(name) ?? [];
    steps.push({ step: file.step ?? null, file });
    byName.set(name, steps);
  }
  return [...byName.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, steps]) => ({
      name,
      steps: steps.sort((a, b) => (a.step ?? -Infinity) - (b.step ?? -Infinity) || a.file.name.localeCompare(b.file.name)),
    }));
}
