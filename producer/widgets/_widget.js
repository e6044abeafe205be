// RunDetails' front end (anywidget): plain DOM and SVG, no dependency, no build step.
// The model's traits are set by producer/widgets/_feed.py (RunFeed.state): status, error,
// times, metrics, log_tail, children, children_total, portal_url, live, notice, run_id,
// experiment, display_name. Each part of the card is redrawn when its traits change.

const TERMINAL = new Set(["Completed", "Failed", "Canceled"]);
const STATE_ORDER = ["Queued", "Preparing", "Running", "Finalizing",
  "CancelRequested", "Completed", "Failed", "Canceled"];
const SVG = "http://www.w3.org/2000/svg";
const CHART_W = 260;
const CHART_H = 84;
/** RunFeed keeps this many lines (LOG_TAIL_LINES): a full tail is the end of a longer log. */
const LOG_TAIL_LINES = 200;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace what ``part`` holds by ``nodes`` (null and false left out). */
function fill(part, ...nodes) {
  part.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  return el;
}

/** A logged value as a number to draw, or null (strings, "NaN", ±"Infinity"). */
function num(v) {
  if (typeof v === "boolean") return v ? 1 : 0;
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3).replace(/\.?0+e/, "e");
    return String(Number(v.toPrecision(5)));
  }
  return String(v);
}

function fmtStep(step) {
  return typeof step === "number" ? step.toLocaleString("en-US") : "?";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = String(whole % 60).padStart(2, "0");
  return `${hours}:${String(minutes).padStart(2, "0")}:${secs}`;  // as wait_for_completion prints it
}

function parseTime(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isFinite(t) ? t : null;
}

function fmtClock(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return today ? time : `${d.toLocaleDateString()} ${time}`;
}

function statusClass(status) {
  return `rs-pill rs-s-${String(status || "unknown").toLowerCase()}`;
}

function pill(status, live) {
  return h("span", { class: statusClass(status), title: `status: ${status}` },
    live ? h("span", { class: "rs-dot" }) : null, status || "…");
}

// -- the parts -------------------------------------------------------------------------------

function drawHead(model, part) {
  const status = model.get("status");
  const live = model.get("live");
  const name = model.get("display_name");
  const runId = model.get("run_id");
  const url = model.get("portal_url");
  fill(part,
    h("div", { class: "rs-title" },
      pill(status, live),
      h("span", { class: "rs-name", text: name || runId }),
      h("span", { class: "rs-sub" },
        model.get("experiment"), name ? h("span", { class: "rs-id", text: runId }) : null)),
    url ? h("a", { class: "rs-studio", href: url, target: "_blank", rel: "noopener" },
      "Open in studio ↗") : null,
  );
}

function runningFor(times, live) {
  const started = parseTime(times.started_at);
  if (times.duration_s !== null && times.duration_s !== undefined) return times.duration_s;
  if (started === null || !live) return null;
  return Math.max(0, (Date.now() - started) / 1000);
}

function drawTimes(model, part) {
  const times = model.get("times") || {};
  const live = model.get("live");
  const st = times.status_times || {};
  const created = parseTime(times.created_at) ?? parseTime(st.NotStarted);
  const facts = [["Created", fmtClock(times.created_at || st.NotStarted)]];
  if (times.queued_s !== null && times.queued_s !== undefined) {
    facts.push(["Queued", fmtDuration(times.queued_s)]);
  }
  const ran = runningFor(times, live);
  if (ran !== null) facts.push([live && !times.ended_at ? "Running for" : "Duration", fmtDuration(ran)]);
  else if (!times.started_at && live && created !== null) {
    facts.push(["Waiting", fmtDuration(Math.max(0, (Date.now() - created) / 1000))]);
  }
  if (times.ended_at) facts.push(["Ended", fmtClock(times.ended_at)]);
  // NotStarted is "Created" above; the others as offsets from it.
  const steps = STATE_ORDER.filter((name) => st[name]).map((name) => {
    const at = parseTime(st[name]);
    const offset = at !== null && created !== null ? ` +${fmtDuration(Math.max(0, (at - created) / 1000))}` : "";
    return h("li", { class: statusClass(name).replace("rs-pill", "rs-step"), title: st[name] },
      h("span", { class: "rs-step-name", text: name }),
      h("span", { class: "rs-step-at", text: offset.trim() }));
  });
  fill(part,
    h("dl", { class: "rs-facts" }, facts.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v })))),
    steps.length ? h("ol", { class: "rs-steps", "aria-label": "statuses reached" }, steps) : null,
  );
}

function drawAlerts(model, part) {
  const error = model.get("error");
  const notice = model.get("notice");
  fill(part,
    error ? h("div", { class: "rs-error", role: "alert" }, h("strong", { text: model.get("status") === "Failed" ? "Failed" : "Error" }), h("pre", { text: error })) : null,
    notice ? h("div", { class: "rs-notice", text: notice }) : null,
  );
}

function chart(name, m) {
  const xs = m.steps || [];
  const ys = (m.values || []).map(num);
  const lo = m.lo ? m.lo.map(num) : null;
  const hi = m.hi ? m.hi.map(num) : null;
  const finite = ys.filter((v) => v !== null).concat(lo ? lo.filter((v) => v !== null) : [], hi ? hi.filter((v) => v !== null) : []);
  const svg = s("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, class: "rs-plot", role: "img", "aria-label": `${name}: ${xs.length} points` });
  let yMin = Math.min(...finite);
  let yMax = Math.max(...finite);
  const xMin = xs.length ? Math.min(...xs) : 0;
  const xMax = xs.length ? Math.max(...xs) : 1;
  if (finite.length) {
    if (yMin === yMax) { yMin -= Math.abs(yMin) * 0.1 || 1; yMax += Math.abs(yMax) * 0.1 || 1; }
    const pad = (yMax - yMin) * 0.06;
    yMin -= pad; yMax += pad;
    const X = (x) => (xMax === xMin ? CHART_W / 2 : ((x - xMin) / (xMax - xMin)) * CHART_W);
    const Y = (y) => CHART_H - ((y - yMin) / (yMax - yMin)) * CHART_H;
    for (const frac of [0.25, 0.5, 0.75]) {
      svg.append(s("line", { x1: 0, x2: CHART_W, y1: CHART_H * frac, y2: CHART_H * frac, class: "rs-grid" }));
    }
    if (lo && hi) {
      const top = [], bottom = [];
      xs.forEach((x, i) => {
        if (lo[i] !== null && hi[i] !== null) { top.push(`${X(x)},${Y(hi[i])}`); bottom.unshift(`${X(x)},${Y(lo[i])}`); }
      });
      if (top.length) svg.append(s("polygon", { points: top.concat(bottom).join(" "), class: "rs-band" }));
    }
    // One path; a value that cannot be drawn (a string, NaN) breaks the line.
    let d = "";
    let pen = false;
    xs.forEach((x, i) => {
      if (ys[i] === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${X(x).toFixed(2)},${Y(ys[i]).toFixed(2)}`;
      pen = true;
    });
    svg.append(s("path", { d, class: "rs-line" }));
    if (ys.filter((v) => v !== null).length < 40) {
      xs.forEach((x, i) => {
        if (ys[i] !== null) svg.append(s("circle", { cx: X(x), cy: Y(ys[i]), r: 1.8, class: "rs-mark" }));
      });
    }
  }
  const plot = finite.length
    ? h("div", { class: "rs-plotbox" },
      h("div", { class: "rs-yaxis" },
        h("span", { text: fmtValue(Math.max(...finite)) }),
        h("span", { text: fmtValue(Math.min(...finite)) })),
      svg)
    : h("div", { class: "rs-nochart", text: "no numbers to draw" });
  const count = typeof m.count === "number" ? m.count.toLocaleString("en-US") : "?";
  return h("figure", { class: "rs-chart", "data-metric": name },
    h("figcaption", {},
      h("span", { class: "rs-metric", title: name, text: name }),
      h("span", { class: "rs-last", title: "last value", text: fmtValue(m.last) })),
    plot,
    h("div", { class: "rs-xaxis", title: m.downsampled ? "downsampled: the line is each bucket's last value, the band its min and max" : null },
      h("span", { class: "rs-steps-range", text: xs.length ? `step ${fmtStep(xMin)}–${fmtStep(xMax)}` : "" }),
      h("span", { text: `${count} point${m.count === 1 ? "" : "s"}` })));
}

function describe(m) {
  if (m.kind === "list") return `list of ${m.count}`;
  if (m.kind === "table") return `table · ${m.count} row${m.count === 1 ? "" : "s"} × ${(m.columns || []).length} columns`;
  if (m.kind === "typed") return m.schema_type ? m.schema_type.replace("_", " ") : "typed metric";
  if (m.kind === "series") return `last of ${m.count} · min ${fmtValue(m.min)} · max ${fmtValue(m.max)}`;
  return "";
}

function drawMetrics(model, part) {
  const metrics = model.get("metrics") || {};
  const names = Object.keys(metrics).sort();
  const charted = names.filter((n) => metrics[n].steps);
  const rest = names.filter((n) => !metrics[n].steps);
  if (!names.length) {
    fill(part, h("h4", { text: "Metrics" }), h("p", { class: "rs-empty", text: "No metrics yet." }));
    return;
  }
  fill(part,
    h("h4", {}, "Metrics ", h("span", { class: "rs-count", text: names.length })),
    charted.length ? h("div", { class: "rs-charts" }, charted.map((n) => chart(n, metrics[n]))) : null,
    rest.length ? h("table", { class: "rs-values" },
      h("tbody", {}, rest.map((n) => {
        const m = metrics[n];
        const shown = m.kind === "value" || m.kind === "series" ? fmtValue(m.last) : "";
        // A value where there is one, else what was logged ("list of 10"), in one column.
        return h("tr", { "data-metric": n },
          h("th", { title: n, text: n }),
          shown !== "" ? h("td", { class: "rs-v", text: shown }) : h("td", { class: "rs-kind", text: describe(m) }),
          h("td", { class: "rs-kind", text: shown !== "" ? describe(m) : "" }));
      }))) : null,
  );
}

function drawLog(model, part, state) {
  const lines = model.get("log_tail") || [];
  const old = part.querySelector("pre");
  const atEnd = !old || old.scrollHeight - old.scrollTop - old.clientHeight < 8;
  if (!lines.length) {
    fill(part, h("h4", { text: "Log" }), h("p", { class: "rs-empty", text: model.get("live") ? "No output yet." : "No output." }));
    return;
  }
  const pre = h("pre", { class: "rs-log" }, lines.map((line) => h("div", { class: /^\[(rank \d+\] \[)?stderr\]/.test(line) ? "rs-stderr" : null, text: line })));
  fill(part, h("h4", {}, "Log ", h("span", { class: "rs-count", text: lines.length >= LOG_TAIL_LINES ? `last ${lines.length} lines` : `${lines.length} line${lines.length === 1 ? "" : "s"}` })), pre);
  if (atEnd || state.firstLog) pre.scrollTop = pre.scrollHeight;
  else pre.scrollTop = old.scrollTop;
  state.firstLog = false;
}

function drawChildren(model, part) {
  const children = model.get("children") || [];
  const total = model.get("children_total") || children.length;
  if (!children.length) {
    fill(part);
    part.hidden = true;
    return;
  }
  part.hidden = false;
  const rows = children.map((c) => h("tr", { "data-run": c.run_id },
    h("td", {}, c.portal_url ? h("a", { href: c.portal_url, target: "_blank", rel: "noopener", text: c.display_name || c.run_id }) : (c.display_name || c.run_id)),
    h("td", {}, pill(c.status, false)),
    h("td", { class: "rs-v", text: c.duration_s !== null && c.duration_s !== undefined ? fmtDuration(c.duration_s) : (TERMINAL.has(c.status) ? "—" : "running") })));
  fill(part,
    h("h4", {}, "Child runs ", h("span", { class: "rs-count", text: total })),
    h("table", { class: "rs-children" }, h("tbody", {}, rows)),
    total > children.length ? h("p", { class: "rs-empty", text: `and ${total - children.length} more in the studio` }) : null,
  );
}

function render({ model, el }) {
  const card = h("div", { class: "rs-card" });
  const head = h("header", { class: "rs-head" });
  const times = h("section", { class: "rs-times" });
  const alerts = h("section", { class: "rs-alerts" });
  const metrics = h("section", { class: "rs-metrics" });
  const log = h("section", { class: "rs-logbox" });
  const children = h("section", { class: "rs-kids" });
  card.append(head, times, alerts, metrics, log, children);
  el.classList.add("runstream-widget");
  el.replaceChildren(card);
  const state = { firstLog: true };

  const parts = [
    [["status", "live", "display_name", "run_id", "experiment", "portal_url"], () => drawHead(model, head)],
    [["times", "live"], () => drawTimes(model, times)],
    [["error", "notice", "status"], () => drawAlerts(model, alerts)],
    [["metrics"], () => drawMetrics(model, metrics)],
    [["log_tail", "live"], () => drawLog(model, log, state)],
    [["children", "children_total"], () => drawChildren(model, children)],
  ];
  const handlers = [];
  for (const [names, draw] of parts) {
    draw();
    for (const name of names) {
      model.on(`change:${name}`, draw);
      handlers.push([`change:${name}`, draw]);
    }
  }
  // A running run's duration ticks between updates.
  const timer = setInterval(() => { if (model.get("live")) drawTimes(model, times); }, 1000);
  return () => {
    clearInterval(timer);
    for (const [event, draw] of handlers) model.off(event, draw);
  };
}

export default { render };
