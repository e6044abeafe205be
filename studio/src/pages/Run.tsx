// A run's details: header (live status, times, links, tags, properties, error, cancel),
// and tabs for metrics, outputs + logs, the snapshot and child runs.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, enc, getJSON, postJSON, TERMINAL, type Point, type RunDetails, type Submission } from "../lib/api";
import { useAsync, useEventSource, useNow, useTitle } from "../lib/hooks";
import { withStatus, type StatusEvent } from "../lib/status";
import { formatDuration, formatTime, runDuration } from "../lib/format";
import { href, setQuery, useLocation } from "../lib/router";
import { CopyId, Empty, Id, ErrorBanner, KeyValues, LiveDot, ScalarValue, Spinner, StatusPill, Tabs, Tags, Time } from "../components/ui";
import { PointHub } from "../chart/SeriesChart";
import { RunMetrics } from "./RunMetrics";
import { RunOutputs } from "./RunOutputs";
import { RunSnapshot } from "./RunSnapshot";
import { RunChildren } from "./RunChildren";

const ORDER = ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "CancelRequested", "Completed", "Failed", "Canceled"];

function Timeline({ times }: { times: Record<string, string | null> }) {
  const steps = ORDER.filter((s) => times[s]).map((s) => [s, times[s]!] as const);
  steps.sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
  if (steps.length === 0) return null;
  return (
    <ol class="timeline">
      {steps.map(([status, t], i) => {
        const next = steps[i + 1];
        const spent = next ? (Date.parse(next[1]) - Date.parse(t)) / 1000 : null;
        return (
          <li key={status}>
            <span class="timeline-status">{status}</span>
            <time dateTime={t} title={t}>{formatTime(t)}</time>
            {spent !== null && <span class="timeline-spent">{formatDuration(spent)}</span>}
          </li>
        );
      })}
    </ol>
  );
}

function CancelButton({ run, onDone }: { run: RunDetails; onDone: () => void }) {
  const [state, setState] = useState<{ busy: boolean; error?: string; note?: string }>({ busy: false });
  if (TERMINAL.has(run.status)) return null;
  const cancel = async () => {
    if (!window.confirm(`Cancel run ${run.display_name ?? run.run_id}?`)) return;
    setState({ busy: true });
    try {
      const answer = await postJSON<{ action: string; state: string }>(`/v1/runs/${enc(run.run_id)}/cancel`);
      setState({ busy: false, note: `Cancel sent (${answer.action}).` });
      onDone();
    } catch (err) {
      setState({ busy: false, error: err instanceof Error ? err.message : String(err) });
    }
  };
  return (
    <span class="cancel">
      <button class="btn btn-danger" disabled={state.busy || run.status === "CancelRequested"} onClick={cancel}>
        {state.busy ? "Canceling…" : run.status === "CancelRequested" ? "Cancel requested" : "Cancel run"}
      </button>
      {state.note && <span class="muted">{state.note}</span>}
      {state.error && <div class="banner banner-error">{state.error}</div>}
    </span>
  );
}

export function RunPage({ runId }: { runId: string }) {
  const { query } = useLocation();
  // Statuses only move forward and terminal ones stick: an answer still running that
  // lands after the live stream said the run ended is stale, and kept out.
  const shown = useRef<RunDetails | undefined>(undefined);
  const run = useAsync(async (signal) => {
    const fresh = await getJSON<RunDetails>(`/v1/runs/${enc(runId)}`, signal);
    const current = shown.current;
    return current && current.run_id === fresh.run_id && TERMINAL.has(current.status) && !TERMINAL.has(fresh.status) ? current : fresh;
  }, [runId]);
  shown.current = run.data;
  // Submitted runs went through Queued (start_logging runs never do) and carry a snapshot id.
  const submittedHint = !!run.data && (!!run.data.status_times.Queued || "ContentSnapshotId" in run.data.properties);
  const submission = useAsync(async (signal) => {
    if (!submittedHint) return null;
    try {
      return await getJSON<Submission>(`/v1/submissions/${enc(runId)}`, signal);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 409)) return null;
      throw err;
    }
  }, [runId, submittedHint]);
  const hub = useMemo(() => new PointHub(), [runId]);
  const [names, setNames] = useState(new Set<string>());
  const now = useNow(1000);
  const data = run.data;
  useTitle(data ? `${data.display_name ?? data.run_id} (${data.status}) · ${data.experiment}` : runId);
  const live = !!data && !TERMINAL.has(data.status);

  // Live: status changes and new points (batched per 100 ms for the charts).
  const pending = useRef(new Map<string, Point[]>());
  const flushTimer = useRef<number | undefined>(undefined);
  const reloadTimer = useRef<number | undefined>(undefined);
  const stream = useEventSource(live ? `/v1/runs/${enc(runId)}/events?types=status,point` : null, {
    status: (s: StatusEvent) => {
      // The times the header shows follow at once (Ended, Duration); the rest (heartbeat,
      // error text) with a read of the run once things settle, and again after it ended.
      run.set((old) => old && withStatus(old, s));
      window.clearTimeout(reloadTimer.current);
      reloadTimer.current = window.setTimeout(() => run.reload(), TERMINAL.has(s.status) ? 1000 : 300);
    },
    point: (p: Point & { name: string }) => {
      const list = pending.current.get(p.name);
      if (list) list.push(p);
      else pending.current.set(p.name, [p]);
      if (flushTimer.current === undefined) {
        flushTimer.current = window.setTimeout(() => {
          flushTimer.current = undefined;
          const batch = pending.current;
          pending.current = new Map();
          let added = false;
          batch.forEach((points, name) => {
            hub.publish(name, points);
            if (!names.has(name)) added = true;
          });
          if (added) setNames((old) => new Set([...old, ...batch.keys()]));
        }, 100);
      }
    },
  });
  // Each time the stream (re)opens, re-read the charts once: points committed between the
  // first read and the stream's start (or while it was down) are then on them too.
  useEffect(() => {
    if (stream === "open") hub.resync();
  }, [stream]);
  useEffect(() => () => {
    window.clearTimeout(flushTimer.current);
    window.clearTimeout(reloadTimer.current);
  }, []);

  if (run.error && !data) {
    const missing = run.error instanceof ApiError && run.error.status === 404;
    return (
      <div class="page">
        {missing ? (
          <Empty title="No such run">
            There is no run <span class="mono">{runId}</span>{" "}
            (or your token does not grant its workspace). <a href="/">Back to the experiments</a>
          </Empty>
        ) : (
          <ErrorBanner error={run.error} onRetry={run.reload} />
        )}
      </div>
    );
  }
  if (!data) return <div class="page"><Spinner /></div>;

  const tab = query.get("tab") ?? "metrics";
  const submitted = !!submission.data;
  const tabs = [
    { id: "metrics", label: "Metrics" },
    { id: "outputs", label: "Outputs + logs" },
    { id: "snapshot", label: "Snapshot", hidden: !submitted },
    { id: "children", label: <>Child runs <span class="count">{data.children.length}</span></>, hidden: data.children.length === 0 },
  ];
  const properties = Object.entries(data.properties);

  return (
    <div class="page run-page">
      <div class="page-head">
        <div>
          <div class="crumbs">
            <a href="/">Experiments</a> / <a href={href.experiment(data.experiment)}>{data.experiment}</a> /
            {data.parent_run_id && <> <a href={href.run(data.parent_run_id)} class="mono">parent</a> /</>}
          </div>
          <h1 class="run-title">
            {data.display_name ? <span class="run-name">{data.display_name}</span> : <Id value={data.run_id} class="mono" />}
            <span class="run-number">#{data.number}</span>
            <StatusPill status={data.status} />
            {live && <LiveDot state={stream} />}
          </h1>
          {data.description && <p class="subtitle">{data.description}</p>}
        </div>
        <div class="head-actions">
          <CancelButton run={data} onDone={run.reload} />
        </div>
      </div>

      {data.error && (
        <div class="banner banner-error run-error" role="alert">
          <strong>{data.status === "Failed" || data.status === "Canceled" ? data.status : "Error"}</strong>
          <pre class="error-pre">{data.error}</pre>
        </div>
      )}

      <section class="card facts">
        <div class="facts-grid">
          <KeyValues
            items={[
              ["Run ID", <CopyId value={data.run_id} />],
              ["Experiment", <a href={href.experiment(data.experiment)}>{data.experiment}</a>],
              ["Workspace", <span class="mono">{data.workspace}</span>],
              ["Compute target", data.compute_target ? <a href={href.target(data.compute_target)}>{data.compute_target}</a> : <span class="muted">—</span>],
            ]}
          />
          <KeyValues
            items={[
              ["Created", <Time iso={data.created_at} />],
              ["Started", <Time iso={data.started_at} />],
              ["Ended", <Time iso={data.ended_at} />],
              ["Duration", data.started_at
                ? <span class="num-text">{formatDuration(runDuration(data, now))}{live ? " (running)" : ""}</span>
                : data.ended_at
                  ? <span class="muted">never started · {data.status.toLowerCase()} after {formatDuration(runDuration(data, now))}</span>
                  : <span class="muted">not started · waiting {formatDuration(runDuration(data, now))}</span>],
            ]}
          />
          <KeyValues
            items={[
              ["Parent", data.parent_run_id ? <a class="mono" href={href.run(data.parent_run_id)}><Id value={data.parent_run_id} /></a> : <span class="muted">—</span>],
              ["Child runs", data.children.length ? <a href={href.run(data.run_id, "children")}>{data.children.length}</a> : <span class="muted">none</span>],
              ["Last heartbeat", <Time iso={data.last_heartbeat_at} ago />],
              ...(data.dropped_events ? [["Dropped events", <span class="error-text">{data.dropped_events}</span>] as [string, preact.ComponentChildren]] : []),
              ...(data.logged_after_end ? [["Logged after end", <span class="error-text" title="Values other ranks or processes logged after the run ended: stored and shown, but the run had already ended" data-logged-after-end={data.logged_after_end}>{data.logged_after_end.toLocaleString()}</span>] as [string, preact.ComponentChildren]] : []),
            ]}
          />
        </div>
        <Timeline times={data.status_times} />
        <div class="facts-tags">
          <span class="label">Tags</span> <Tags tags={data.tags} />
        </div>
        {properties.length > 0 && (
          <details class="props">
            <summary>Properties ({properties.length})</summary>
            <KeyValues items={properties.map(([k, v]) => [<span class="mono">{k}</span>, <ScalarValue value={v} />])} />
          </details>
        )}
      </section>

      <Tabs tabs={tabs} active={tab} onSelect={(id) => setQuery({ tab: id === "metrics" ? null : id })} />
      <div class="tab-body">
        {tab === "metrics" && <RunMetrics run={data} hub={hub} liveNames={names} live={live} />}
        {tab === "outputs" && <RunOutputs run={data} live={live} />}
        {tab === "snapshot" && (submission.data ? <RunSnapshot run={data} submission={submission.data} /> : submission.loading ? <Spinner /> : <Empty title="Not a submitted run">Runs started with start_logging have no snapshot.</Empty>)}
        {tab === "children" && <RunChildren run={data} />}
      </div>
    </div>
  );
}
