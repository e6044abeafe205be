// A run's files (download, text and image preview) and its log, streaming while it runs.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { enc, filePath, getJSON, qs, request, type LogLine, type RunDetails, type RunFile } from "../lib/api";
import { useAsync, useEventSource } from "../lib/hooks";
import { formatBytes } from "../lib/format";
import { Card, Empty, ErrorBanner, LiveDot, Spinner, Table, Time } from "../components/ui";

const TEXT_EXT = /\.(txt|log|json|jsonl|ya?ml|toml|ini|cfg|conf|csv|tsv|md|rst|py|sh|r|sql|js|ts|html?|xml|out|err)$/i;
const PREVIEW_MAX = 2 * 1024 * 1024;
const SHOWN_LINES = 5000;

function previewable(f: RunFile): "text" | "image" | null {
  if (f.content_type.startsWith("image/") || f.kind === "IMAGE") return "image";
  if (f.size_bytes > PREVIEW_MAX) return null;
  if (f.content_type.startsWith("text/") || f.content_type === "application/json" || TEXT_EXT.test(f.name)) return "text";
  return null;
}

function Preview({ run, file, onClose }: { run: RunDetails; file: RunFile; onClose: () => void }) {
  const kind = previewable(file);
  const text = useAsync(async (signal) => {
    if (kind !== "text") return null;
    const response = await request(filePath(run.run_id, file.name), { signal });
    return response.text();
  }, [file.name]);
  return (
    <Card
      title={<span class="mono">{file.name}</span>}
      actions={
        <>
          <a class="btn btn-small" href={filePath(run.run_id, file.name)} download={file.name.split("/").pop()}>Download</a>
          <button class="btn btn-small" onClick={onClose}>Close</button>
        </>
      }
      class="preview"
    >
      {kind === "image" && <img class="preview-image" src={filePath(run.run_id, file.name)} alt={file.name} />}
      {kind === "text" && (text.data !== undefined ? <pre class="log">{text.data}</pre> : text.error ? <ErrorBanner error={text.error} /> : <Spinner />)}
      {kind === null && <div class="muted">No preview for {file.content_type} ({formatBytes(file.size_bytes)}); download it instead.</div>}
    </Card>
  );
}

/** The log: every line so far, then new ones live (one stream from the beginning). */
function LogView({ run, live }: { run: RunDetails; live: boolean }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const [showAll, setShowAll] = useState(false);
  const [follow, setFollow] = useState(true);
  const [wrap, setWrap] = useState(false);
  const box = useRef<HTMLPreElement>(null);
  const buffer = useRef<LogLine[]>([]);
  const timer = useRef<number | undefined>(undefined);
  // A live run: the event stream replays the log from the start ("0_0") and follows it,
  // resuming by event id after a drop. An ended run: the pages of /logs.
  const [streamed, setStreamed] = useState(live);
  const fromStream = useRef(live);
  useEffect(() => {
    // The run ended: the last lines arrive within moments; then close the stream.
    if (live || !streamed) return;
    const t = window.setTimeout(() => setStreamed(false), 4000);
    return () => window.clearTimeout(t);
  }, [live, streamed]);
  const state = useEventSource(streamed ? `/v1/runs/${enc(run.run_id)}/events${qs({ types: "log", last_event_id: "0_0" })}` : null, {
    log: (line: LogLine) => {
      buffer.current.push(line);
      if (timer.current === undefined) {
        timer.current = window.setTimeout(() => {
          timer.current = undefined;
          const batch = buffer.current;
          buffer.current = [];
          setLines((old) => old.concat(batch));
          setLoaded(true);
        }, 50);
      }
    },
  });
  useEffect(() => {
    if (streamed) {
      const t = window.setTimeout(() => setLoaded(true), 1500);
      return () => window.clearTimeout(t);
    }
    if (fromStream.current) return; // the stream delivered the whole log already
    let cancelled = false;
    (async () => {
      let after: string | null = null;
      const all: LogLine[] = [];
      for (;;) {
        const page: { lines: LogLine[]; next_cursor: string | null } = await getJSON(`/v1/runs/${enc(run.run_id)}/logs${qs({ limit: 1000, after })}`);
        if (cancelled) return;
        all.push(...page.lines);
        setLines(all.slice());
        if (page.lines.length < 1000 || !page.next_cursor) break;
        after = page.next_cursor;
      }
      setLoaded(true);
    })().catch((err: Error) => !cancelled && setError(err));
    return () => {
      cancelled = true;
    };
  }, [run.run_id, streamed]);
  useEffect(() => () => window.clearTimeout(timer.current), []);
  useLayoutEffect(() => {
    const el = box.current;
    if (el && follow) el.scrollTop = el.scrollHeight;
  }, [lines, follow]);

  const ranks = new Set(lines.map((l) => l.rank));
  const shown = showAll ? lines : lines.slice(-SHOWN_LINES);
  return (
    <Card
      title={<>Log {streamed && <LiveDot state={state} />}</>}
      actions={
        <>
          <label class="check-label"><input type="checkbox" checked={follow} onChange={(e) => setFollow((e.target as HTMLInputElement).checked)} />Follow</label>
          <label class="check-label"><input type="checkbox" checked={wrap} onChange={(e) => setWrap((e.target as HTMLInputElement).checked)} />Wrap</label>
          <span class="muted">{lines.length.toLocaleString("en-US")} lines</span>
        </>
      }
      class="log-card"
    >
      <ErrorBanner error={error} />
      {!loaded && lines.length === 0 && <Spinner label="Reading the log…" />}
      {loaded && lines.length === 0 && (
        <div class="muted">{live ? "Nothing logged yet — lines appear here as the run prints them." : "No log lines: a submitted run's output is captured here (runs started with start_logging keep their own console)."}</div>
      )}
      {lines.length > SHOWN_LINES && !showAll && (
        <div class="muted small">
          {(lines.length - SHOWN_LINES).toLocaleString("en-US")} earlier lines hidden. <button class="link-btn" onClick={() => setShowAll(true)}>Show all</button>
        </div>
      )}
      {lines.length > 0 && (
        <pre ref={box} class={`log ${wrap ? "log-wrap" : ""}`} data-testid="run-log">
          {shown.map((l, i) => (
            <div class={`log-line ${l.stream === "stderr" ? "log-err" : ""}`} key={i}>
              {ranks.size > 1 && <span class="log-rank">[{l.rank}]</span>}
              {l.line}
            </div>
          ))}
        </pre>
      )}
    </Card>
  );
}

export function RunOutputs({ run, live }: { run: RunDetails; live: boolean }) {
  const files = useAsync((signal) => getJSON<{ files: RunFile[] }>(`/v1/runs/${enc(run.run_id)}/files`, signal), [run.run_id, live]);
  const [open, setOpen] = useState<RunFile | null>(null);
  const list = files.data?.files ?? [];
  return (
    <div class="outputs">
      <Card title={`Files${files.data ? ` (${list.length})` : ""}`} actions={<button class="btn btn-small" onClick={files.reload}>Refresh</button>}>
        <ErrorBanner error={files.error} onRetry={files.reload} />
        {!files.data && !files.error && <Spinner />}
        {files.data && list.length === 0 && (
          <Empty title="No files">
            Files appear here when the run uploads them (<span class="mono">run.upload_file</span>, or <span class="mono">./outputs</span> and <span class="mono">./logs</span> of a submitted run).
          </Empty>
        )}
        {list.length > 0 && (
          <Table class="compact files">
            <thead><tr><th>Name</th><th>Type</th><th class="num">Size</th><th>Uploaded</th><th /></tr></thead>
            <tbody>
              {list.map((f) => (
                <tr key={f.name} class={open?.name === f.name ? "row-active" : ""}>
                  <td>
                    {previewable(f) ? (
                      <button class="link-btn mono" onClick={() => setOpen(f)}>{f.name}</button>
                    ) : (
                      <span class="mono">{f.name}</span>
                    )}
                  </td>
                  <td class="muted">{f.kind === "IMAGE" ? "image (log_image)" : f.metric ?? f.content_type}</td>
                  <td class="num">{formatBytes(f.size_bytes)}</td>
                  <td><Time iso={f.created_at} /></td>
                  <td><a href={filePath(run.run_id, f.name)} download={f.name.split("/").pop()}>Download</a></td>
                </tr>
              ))}
            </tbody>
          </Table>
        )}
      </Card>
      {open && <Preview run={run} file={open} onClose={() => setOpen(null)} />}
      <LogView run={run} live={live} />
    </div>
  );
}
