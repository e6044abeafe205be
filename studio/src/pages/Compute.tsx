// Compute targets: queue counts, waits and agents; a target's queue in order, the runs
// agents hold and its active runs, live (the target's event stream + re-reads).
import { useEffect, useRef } from "preact/hooks";
import { enc, getJSON, type Agent, type QueueState, type RunSummary, type TargetDoc } from "../lib/api";
import { throttle, useAsync, useEventSource, useInterval, useNow, useTitle } from "../lib/hooks";
import { formatDuration } from "../lib/format";
import { href } from "../lib/router";
import { Card, Empty, ErrorBanner, LiveDot, RunLink, Spinner, StatusPill, Table, Time } from "../components/ui";
import { RunsTable } from "./runs";

function Count({ n, tone }: { n: number; tone?: string }) {
  return <span class={`count-cell ${n > 0 && tone ? `tone-${tone}` : n === 0 ? "muted" : ""}`}>{n.toLocaleString("en-US")}</span>;
}

export function ComputePage() {
  useTitle("Compute");
  const targets = useAsync((signal) => getJSON<{ targets: QueueState[] }>("/v1/compute", signal), []);
  useInterval(() => targets.reload(), 3000);
  const list = targets.data?.targets ?? [];
  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1>Compute</h1>
          <p class="subtitle">Queues and agents per compute target · refreshed every 3 s</p>
        </div>
      </div>
      <ErrorBanner error={targets.error} onRetry={targets.reload} />
      {!targets.data && !targets.error && <Spinner />}
      {targets.data && list.length === 0 && (
        <Empty title="No compute targets yet">
          A target appears once a run names it (<span class="mono">compute_target="…"</span>) or an agent serves it:
          <pre class="code">runstream agent --target gpu-pool --slots 4</pre>
        </Empty>
      )}
      {list.length > 0 && (
        <Table>
          <thead>
            <tr>
              <th>Target</th>
              <th class="num">Queued</th>
              <th class="num">Preparing</th>
              <th class="num">Running</th>
              <th class="num">Not responding</th>
              <th class="num">Oldest queued</th>
              <th class="num">Wait p50 / p95</th>
              <th class="num">Last hour ✓ / ✗ / ⊘</th>
              <th class="num">Agents (busy / slots)</th>
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr key={t.compute_target}>
                <td><a class="strong" href={href.target(t.compute_target)}>{t.compute_target}</a></td>
                <td class="num"><Count n={t.queued} tone="queued" /></td>
                <td class="num"><Count n={t.preparing} tone="queued" /></td>
                <td class="num"><Count n={t.running} tone="running" /></td>
                <td class="num"><Count n={t.not_responding} tone="warn" /></td>
                <td class="num">{formatDuration(t.oldest_queued_age_s)}</td>
                <td class="num">{formatDuration(t.queue_wait_p50_s)} / {formatDuration(t.queue_wait_p95_s)}</td>
                <td class="num">
                  <span class="tone-ok">{t.completed_1h}</span> / <span class={t.failed_1h ? "tone-bad" : ""}>{t.failed_1h}</span> / {t.canceled_1h}
                </td>
                <td class="num">
                  {t.agents ? (
                    t.agents.alive ? <>{t.agents.alive} · {t.agents.busy} / {t.agents.slots}</> : <span class="muted">none</span>
                  ) : <span class="muted">—</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </div>
  );
}

function Agents({ agents }: { agents: Agent[] }) {
  if (agents.length === 0)
    return (
      <div class="muted">
        No agent serves this target. Start one with <span class="mono">runstream agent --target …</span>; submitted runs wait in the queue until then.
      </div>
    );
  return (
    <Table class="compact">
      <thead><tr><th>Agent</th><th>Host</th><th class="num">Busy / slots</th><th>Started</th><th>Last heartbeat</th><th>State</th></tr></thead>
      <tbody>
        {[...agents].sort((a, b) => Number(b.alive) - Number(a.alive)).map((a) => (
          <tr key={a.agent_id}>
            <td><span class="mono id-trunc" title={a.agent_id}>{a.agent_id}</span></td>
            <td><span class="mono">{a.hostname}</span> <span class="muted">pid {a.pid}</span></td>
            <td class="num">{a.busy} / {a.slots}</td>
            <td><Time iso={a.started_at} ago /></td>
            <td><Time iso={a.last_heartbeat_at} ago /></td>
            <td>{a.alive ? <span class="pill pill-ok">alive</span> : <span class="pill pill-idle" title="No heartbeat for a while: stopped or lost">gone</span>}</td>
          </tr>
        ))}
      </tbody>
    </Table>
  );
}

export function TargetPage({ target }: { target: string }) {
  useTitle(`${target} · Compute`);
  const doc = useAsync((signal) => getJSON<TargetDoc>(`/v1/compute/${enc(target)}`, signal), [target]);
  const now = useNow(1000);
  const reload = useRef(throttle(() => doc.reload(), 500));
  useEffect(() => {
    reload.current = throttle(() => doc.reload(), 500);
  }, [target]);
  const stream = useEventSource(doc.error ? null : `/v1/compute/${enc(target)}/events`, {
    queue: (state: QueueState) => {
      doc.set((old) => old && { ...old, ...state, agents: old.agents });
      reload.current();
    },
  });
  // Leases and agents change without a queue event: re-read now and then as well.
  useInterval(() => doc.reload(), 5000);

  const d = doc.data;
  // A run is listed once: the queue holds what waits; active runs are the rest (without an
  // entry list from the API, the runs whose status is Queued count as waiting).
  const queuedIds = new Set((d?.queue ?? []).map((q) => q.run_id));
  const waiting = d && !d.queue ? d.active_runs.filter((r) => r.status === "Queued") : [];
  const active = (d?.active_runs ?? []).filter((r) => (d?.queue ? !queuedIds.has(r.run_id) : r.status !== "Queued"));
  const leases = new Map((d?.leased ?? []).map((l) => [l.run_id, l]));
  const activeIds = new Set(active.map((r) => r.run_id));
  const orphanLeases = (d?.leased ?? []).filter((l) => !activeIds.has(l.run_id) && !queuedIds.has(l.run_id));
  const agentCell = (r: RunSummary) => {
    const l = leases.get(r.run_id);
    if (!l) return <span class="muted">—</span>;
    return (
      <span class="agent-cell" title={`${l.agent_id} · attempt ${l.attempt} · leased ${l.leased_at} · lease expires ${l.lease_expires_at}`}>
        <span class="mono id-trunc">{l.agent_id}</span>
        {l.cancel_requested && <StatusPill status="CancelRequested" />}
      </span>
    );
  };
  return (
    <div class="page">
      <div class="page-head">
        <div>
          <div class="crumbs"><a href={href.compute()}>Compute</a> /</div>
          <h1>{target} {d && <LiveDot state={stream} />}</h1>
          {d && (
            <p class="subtitle">
              {d.queued} queued · {d.preparing} preparing · {d.running} running
              {d.not_responding ? ` (${d.not_responding} not responding)` : ""}
              {d.oldest_queued_age_s !== null && ` · oldest queued ${formatDuration(d.oldest_queued_age_s)}`}
              {d.queue_wait_p50_s !== null && ` · queue wait p50 ${formatDuration(d.queue_wait_p50_s)}, p95 ${formatDuration(d.queue_wait_p95_s)}`}
            </p>
          )}
        </div>
      </div>
      <ErrorBanner error={doc.error} onRetry={doc.reload} />
      {!d && !doc.error && <Spinner />}
      {d && (
        <>
          <Card title={`Queue (${d.queue?.length ?? waiting.length})`}>
            {!d.queue && waiting.length > 0 ? (
              <RunsTable runs={waiting} now={now} showExperiment hideCompute />
            ) : d.queue && d.queue.length > 0 ? (
              <Table class="compact queue-table">
                <thead><tr><th class="num">#</th><th>Run</th><th>Experiment</th><th class="num">Priority</th><th class="num">Attempt</th><th>Submitted</th><th class="num">Waiting</th></tr></thead>
                <tbody>
                  {d.queue.map((q) => (
                    <tr key={q.run_id} data-run-id={q.run_id}>
                      <td class="num">{q.position}</td>
                      <td><RunLink runId={q.run_id} /></td>
                      <td><a href={href.experiment(q.experiment)}>{q.experiment}</a></td>
                      <td class="num">{q.priority}</td>
                      <td class="num">{q.attempt}</td>
                      <td><Time iso={q.submitted_at} /></td>
                      <td class="num">{formatDuration(q.age_s)}</td>
                    </tr>
                  ))}
                </tbody>
              </Table>
            ) : (
              <div class="muted">Nothing waiting.</div>
            )}
          </Card>
          {/* Each run once: waiting in the queue, or active (held by an agent, or running
              where nothing leases it); a lease whose run is not active shows apart. */}
          {orphanLeases.length > 0 && (
            <Card title={`Held by agents (${orphanLeases.length})`}>
              <Table class="compact">
                <thead><tr><th>Run</th><th>Experiment</th><th>Agent</th><th class="num">Attempt</th><th>Leased</th><th>Lease expires</th><th /></tr></thead>
                <tbody>
                  {orphanLeases.map((l) => (
                    <tr key={l.run_id} data-run-id={l.run_id}>
                      <td><RunLink runId={l.run_id} /></td>
                      <td><a href={href.experiment(l.experiment)}>{l.experiment}</a></td>
                      <td><span class="mono id-trunc" title={l.agent_id}>{l.agent_id}</span></td>
                      <td class="num">{l.attempt}</td>
                      <td><Time iso={l.leased_at} /></td>
                      <td><Time iso={l.lease_expires_at} /></td>
                      <td>{l.cancel_requested && <StatusPill status="CancelRequested" />}</td>
                    </tr>
                  ))}
                </tbody>
              </Table>
            </Card>
          )}
          <Card title={`Active runs (${active.length})`}>
            {active.length > 0 ? (
              <RunsTable runs={active} now={now} showExperiment hideCompute extraColumns={leases.size > 0 ? [{ head: "Agent", cell: agentCell }] : undefined} />
            ) : (
              <div class="muted">No run is preparing or running here. Queued runs wait above; ended runs leave this list.</div>
            )}
          </Card>
          {d.agents && (
            <Card title={`Agents (${d.agents.filter((a) => a.alive).length} alive)`}>
              <Agents agents={d.agents} />
            </Card>
          )}
          <p class="muted small">
            Last hour: {d.completed_1h} completed, {d.failed_1h} failed, {d.canceled_1h} canceled.
          </p>
        </>
      )}
    </div>
  );
}
