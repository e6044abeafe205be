// Registered models: each model's latest version, and one model's versions with files.
import { enc, getJSON, qs, type ModelPage } from "../lib/api";
import { useAsync, useTitle } from "../lib/hooks";
import { formatBytes } from "../lib/format";
import { href } from "../lib/router";
import type { ComponentChildren } from "preact";
import { Card, Empty, ErrorBanner, KeyValues, RunLink, Spinner, Table, Tags, Time } from "../components/ui";

type Item = [ComponentChildren, ComponentChildren];

export function ModelsPage() {
  useTitle("Models");
  const models = useAsync((signal) => getJSON<ModelPage>(`/v1/models${qs({ latest: "true", limit: 1000 })}`, signal), []);
  const list = models.data?.models ?? [];
  return (
    <div class="page">
      <div class="page-head"><div><h1>Models</h1><p class="subtitle">Registered models, latest version of each</p></div></div>
      <ErrorBanner error={models.error} onRetry={models.reload} />
      {!models.data && !models.error && <Spinner />}
      {models.data && list.length === 0 && (
        <Empty title="No registered models">
          Register one from a run: <pre class="code">run.register_model("my-model", model_path="outputs/model.pkl")</pre>
        </Empty>
      )}
      {list.length > 0 && (
        <Table>
          <thead><tr><th>Name</th><th class="num">Latest version</th><th>From run</th><th>Experiment</th><th>Tags</th><th>Registered</th></tr></thead>
          <tbody>
            {list.map((m) => (
              <tr key={m.id + m.workspace}>
                <td><a class="strong" href={href.model(m.name)}>{m.name}</a></td>
                <td class="num">{m.version}</td>
                <td>{m.run_id ? <RunLink runId={m.run_id} /> : <span class="muted">local files</span>}</td>
                <td>{m.experiment ? <a href={href.experiment(m.experiment)}>{m.experiment}</a> : <span class="muted">—</span>}</td>
                <td><Tags tags={m.tags} /></td>
                <td><Time iso={m.created_at} ago /></td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </div>
  );
}

export function ModelPage({ name }: { name: string }) {
  useTitle(`${name} · Models`);
  const versions = useAsync((signal) => getJSON<ModelPage>(`/v1/models${qs({ name, limit: 1000 })}`, signal), [name]);
  const list = versions.data?.models ?? [];
  return (
    <div class="page">
      <div class="page-head">
        <div>
          <div class="crumbs"><a href={href.models()}>Models</a> /</div>
          <h1>{name}</h1>
          {versions.data && <p class="subtitle">{list.length} version{list.length === 1 ? "" : "s"}</p>}
        </div>
      </div>
      <ErrorBanner error={versions.error} onRetry={versions.reload} />
      {!versions.data && !versions.error && <Spinner />}
      {versions.data && list.length === 0 && <Empty title="No such model">No version of “{name}” is registered (in the workspaces your token grants).</Empty>}
      {list.map((m) => (
        <Card
          key={m.id + m.workspace}
          title={`Version ${m.version}`}
          actions={<span class="muted">registered <Time iso={m.created_at} /></span>}
        >
          <div class="model-meta">
            {m.description && <p class="model-description">{m.description}</p>}
            <KeyValues
              items={[
                ["From", m.run_id ? (
                  <>run <RunLink runId={m.run_id} />{m.experiment && <> of <a href={href.experiment(m.experiment)}>{m.experiment}</a></>}</>
                ) : "local files (Model.register)"],
                ["Path", <span class="mono">{m.path}</span>],
                ["Workspace", <span class="mono">{m.workspace}</span>],
                ...(Object.keys(m.tags).length ? [["Tags", <Tags tags={m.tags} />] as Item] : []),
                ...(Object.keys(m.properties).length ? [["Properties", <Tags tags={m.properties} />] as Item] : []),
              ]}
            />
          </div>
          <Table class="compact">
            <thead><tr><th>File</th><th class="num">Size</th><th>SHA-256</th><th><span class="sr-only">Download</span></th></tr></thead>
            <tbody>
              {m.files.map((f) => (
                <tr key={f.name}>
                  <td class="mono">{f.name}</td>
                  <td class="num">{formatBytes(f.size_bytes)}</td>
                  <td class="mono small muted" title={f.sha256}>{f.sha256.slice(0, 16)}…</td>
                  <td>
                    <a href={`/v1/models/${enc(m.name)}/versions/${m.version}/files/${f.name.split("/").map(enc).join("/")}${qs({ workspace: m.workspace })}`} download={f.name.split("/").pop()}>
                      Download
                    </a>
                  </td>
                </tr>
              ))}
            </tbody>
          </Table>
        </Card>
      ))}
    </div>
  );
}
