// A submitted run's snapshot: what was submitted (spec, queue entry), the zip's file tree
// (read from its central directory in the browser) and the download.
import { useEffect, useState } from "preact/hooks";
import { enc, request, type RunDetails, type Submission } from "../lib/api";
import { formatBytes } from "../lib/format";
import { fileTree, zipEntries, type TreeNode } from "../lib/zip";
import { Card, ErrorBanner, KeyValues, Spinner, Time } from "../components/ui";

const AUTO_LIST_MAX = 20 * 1024 * 1024;

function Tree({ nodes }: { nodes: TreeNode[] }) {
  return (
    <ul class="tree">
      {nodes.map((n) =>
        n.children ? (
          <li key={n.path}>
            <details open={n.children.length < 30}>
              <summary><span class="tree-folder">{n.name}/</span> <span class="muted small">{formatBytes(n.size)}</span></summary>
              <Tree nodes={n.children} />
            </details>
          </li>
        ) : (
          <li key={n.path} class="tree-file">
            <span class="mono">{n.name}</span> <span class="muted small">{formatBytes(n.size)}</span>
          </li>
        ),
      )}
    </ul>
  );
}

export function RunSnapshot({ run, submission }: { run: RunDetails; submission: Submission }) {
  const [tree, setTree] = useState<{ nodes?: TreeNode[]; count?: number; error?: Error; loading?: boolean }>({});
  const url = `/v1/runs/${enc(run.run_id)}/snapshot`;
  const list = async () => {
    setTree({ loading: true });
    try {
      const buffer = await (await request(url)).arrayBuffer();
      const entries = zipEntries(buffer);
      setTree({ nodes: fileTree(entries), count: entries.length });
    } catch (error) {
      setTree({ error: error as Error });
    }
  };
  useEffect(() => {
    if (submission.snapshot.size_bytes <= AUTO_LIST_MAX) void list();
  }, [run.run_id]);
  const spec = submission.spec;
  const script = (spec.script ?? spec.command ?? null) as unknown;
  const args = Array.isArray(spec.arguments) ? (spec.arguments as unknown[]).map(String).join(" ") : null;
  return (
    <div class="snapshot">
      <Card
        title="Snapshot"
        actions={<a class="btn btn-primary btn-small" href={url} download={`${run.run_id}.zip`}>Download zip ({formatBytes(submission.snapshot.size_bytes)})</a>}
      >
        <KeyValues
          items={[
            ["Script", script ? <span class="mono">{String(script)}{args ? ` ${args}` : ""}</span> : <span class="muted">—</span>],
            ["Compute target", submission.target],
            ["Submitted", <Time iso={submission.submitted_at} />],
            ["Queue state", <>{submission.state}{submission.position ? ` · position ${submission.position}` : ""}</>],
            ["Attempt", `${submission.attempt} (max retries ${submission.max_retries})`],
            ["Agent", submission.agent_id ? <span class="mono id-trunc" title={submission.agent_id}>{submission.agent_id}</span> : <span class="muted">—</span>],
            ["Exit code", submission.exit_code ?? <span class="muted">—</span>],
            ["SHA-256", <span class="mono small">{submission.snapshot.sha256}</span>],
          ]}
        />
        <details class="props">
          <summary>Run configuration (spec)</summary>
          <pre class="code">{JSON.stringify(spec, null, 2)}</pre>
        </details>
      </Card>
      <Card title={`Files${tree.count !== undefined ? ` (${tree.count})` : ""}`}>
        {!tree.nodes && !tree.loading && !tree.error && (
          <button class="btn" onClick={list}>
            {submission.snapshot.size_bytes <= AUTO_LIST_MAX ? "List the files" : `List the files (reads ${formatBytes(submission.snapshot.size_bytes)})`}
          </button>
        )}
        {tree.loading && <Spinner label="Reading the zip…" />}
        <ErrorBanner error={tree.error} />
        {tree.nodes && <Tree nodes={tree.nodes} />}
      </Card>
    </div>
  );
}
