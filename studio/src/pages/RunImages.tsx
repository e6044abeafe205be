// log_image's images per name, step by step: the newest step first (following new steps
// while it is shown), a slider and ‹ › over every step, and a strip of thumbnails when
// there are few.
import { useState } from "preact/hooks";
import { filePath } from "../lib/api";
import type { ImageSeries } from "../lib/images";

/** Up to this many steps also show as a strip of thumbnails. */
const STRIP_MAX = 12;

/** Small images (a 28x28 sample) are scaled up with sharp pixels, big ones (a figure)
 * scaled down smoothly. */
function markSmall(e: Event) {
  const img = e.currentTarget as HTMLImageElement;
  img.classList.toggle("pixelated", img.naturalWidth < img.clientWidth && img.naturalHeight < img.clientHeight);
}

function stepLabel(step: number | null): string {
  return step === null ? "no step" : `step ${step}`;
}

export function ImageSteps({ runId, series }: { runId: string; series: ImageSeries }) {
  const count = series.steps.length;
  const last = count - 1;
  // null: follow the newest step (live runs add steps); else the index chosen.
  const [chosen, setChosen] = useState<number | null>(null);
  const index = chosen === null ? last : Math.min(chosen, last);
  const current = series.steps[index];
  const choose = (i: number) => setChosen(i >= last ? null : Math.max(0, i));
  const src = filePath(runId, current.file.name);
  return (
    <figure class="image-steps" data-image={series.name} data-step={current.step ?? ""}>
      <div class="chart-head">
        <span class="chart-title" title={series.name}>{series.name}</span>
        <span class="badge">{count === 1 ? "1 step" : `${count} steps`}</span>
      </div>
      <a href={src} target="_blank" rel="noreferrer" class="image-steps-view">
        <img src={src} alt={`${series.name}, ${stepLabel(current.step)}`} onLoad={markSmall} />
      </a>
      {count > 1 && (
        <div class="image-steps-bar">
          <button class="btn btn-tiny" disabled={index === 0} onClick={() => choose(index - 1)} aria-label={`Previous step of ${series.name}`}>‹</button>
          <input
            type="range"
            min={0}
            max={last}
            step={1}
            value={index}
            onInput={(e) => choose(Number((e.target as HTMLInputElement).value))}
            aria-label={`Step of ${series.name}`}
            aria-valuetext={stepLabel(current.step)}
          />
          <button class="btn btn-tiny" disabled={index === last} onClick={() => choose(index + 1)} aria-label={`Next step of ${series.name}`}>›</button>
        </div>
      )}
      <figcaption class="mono image-steps-caption">
        <span class="image-steps-step">{stepLabel(current.step)}</span>
        {count > 1 && <span class="muted"> · {index + 1} of {count}</span>}
        <span class="muted" title={current.file.name}> · {current.file.name}</span>
      </figcaption>
      {count > 1 && count <= STRIP_MAX && (
        <div class="image-strip">
          {series.steps.map((s, i) => (
            <button
              key={s.file.name}
              class={`image-strip-item${i === index ? " active" : ""}`}
              onClick={() => choose(i)}
              title={stepLabel(s.step)}
              aria-label={`Show ${stepLabel(s.step)} of ${series.name}`}
              aria-current={i === index ? "true" : undefined}
            >
              <img src={filePath(runId, s.file.name)} alt="" loading="lazy" onLoad={markSmall} />
              <span class="mono">{s.step ?? "–"}</span>
            </button>
          ))}
        </div>
      )}
    </figure>
  );
}
