// Downloads of what a chart shows: PNG (with the chart's title, and for the SVG charts
// their legend) and CSV.

export function download(name: string, blob: Blob): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function fileSafe(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80) || "chart";
}

export const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

/** A canvas of `width`×`height` CSS pixels, white, the title written at its top. */
function titledCanvas(title: string, width: number, height: number, titleH: number): [HTMLCanvasElement, CanvasRenderingContext2D] {
  const dpr = window.devicePixelRatio || 1;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round((height + titleH) * dpr);
  const ctx = canvas.getContext("2d")!;
  ctx.scale(dpr, dpr);
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height + titleH);
  ctx.fillStyle = "#0f172a";
  ctx.font = `14px ${FONT}`;
  ctx.fillText(title, 8, 19);
  return [canvas, ctx];
}

export function exportCanvasPNG(title: string, source: HTMLCanvasElement): void {
  const dpr = window.devicePixelRatio || 1;
  const [canvas, ctx] = titledCanvas(title, source.width / dpr, source.height / dpr, 28);
  ctx.drawImage(source, 0, 28, source.width / dpr, source.height / dpr);
  canvas.toBlob((blob) => blob && download(`${fileSafe(title)}.png`, blob), "image/png");
}

function svgImage(svg: SVGSVGElement): Promise<HTMLImageElement> {
  const copy = svg.cloneNode(true) as SVGSVGElement;
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  copy.setAttribute("width", String(svg.width.baseVal.value));
  copy.setAttribute("height", String(svg.height.baseVal.value));
  const text = new XMLSerializer().serializeToString(copy);
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      URL.revokeObjectURL(url);
      resolve(img);
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error("the chart could not be drawn as an image"));
    };
    img.src = url;
  });
}

export interface LegendItem {
  label: string;
  color: string;
  dash?: boolean;
}

/** SVG charts side by side under the title, then their legend (one row per item). */
export async function exportSvgPNG(title: string, svgs: SVGSVGElement[], legend: LegendItem[] = []): Promise<void> {
  const images = await Promise.all(svgs.map(svgImage));
  const width = images.reduce((w, img) => w + img.width, 0);
  const chartH = Math.max(0, ...images.map((img) => img.height));
  const rowH = 18;
  const measure = document.createElement("canvas").getContext("2d")!;
  measure.font = `12px ${FONT}`;
  const colW = Math.min(width - 24, Math.max(120, ...legend.map((item) => measure.measureText(item.label).width + 40)));
  const perRow = Math.max(1, Math.floor((width - 24) / colW));
  const legendH = legend.length ? Math.ceil(legend.length / perRow) * rowH + 10 : 0;
  const [canvas, ctx] = titledCanvas(title, width, chartH + legendH, 28);
  let x = 0;
  for (const img of images) {
    ctx.drawImage(img, x, 28);
    x += img.width;
  }
  ctx.font = `12px ${FONT}`;
  ctx.textBaseline = "middle";
  legend.forEach((item, i) => {
    const lx = 12 + (i % perRow) * colW;
    const ly = 28 + chartH + 8 + Math.floor(i / perRow) * rowH + rowH / 2;
    ctx.strokeStyle = item.color;
    ctx.lineWidth = 2;
    ctx.setLineDash(item.dash ? [4, 3] : []);
    ctx.beginPath();
    ctx.moveTo(lx, ly);
    ctx.lineTo(lx + 16, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#334155";
    ctx.fillText(item.label, lx + 22, ly, colW - 30);
  });
  canvas.toBlob((blob) => blob && download(`${fileSafe(title)}.png`, blob), "image/png");
}
