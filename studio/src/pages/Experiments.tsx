import { useMemo, useState } from "preact/hooks";
import { getJSON, qs, type Experiment, type ExperimentPage } from "../lib/api";
import { useAsync, useInterval, useTitle } from "../lib/hooks";
import { href } from "../lib/router";
import { Empty, ErrorBanner, Spinner, STATUS_CLASS, Table, Time } from "../components/ui";
import { plural } from "../lib/format";

/** `url` with one more query parameter. */
function withQuery(url: string, key: string, value: string): string {
  return `${url}${url.includes("?") ? "&" : "?"}${key}=${encodeURIComponent(value)}`;
}

const PAGE = 200;

export function ExperimentsPage() {
  const [pages, setPages] = useState<Experiment[][]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [search, setSearch] = useState("");
  useTitle("Experiments");
  const first = useAsync(async (signal) => {
    const page = await getJSON<ExperimentPage>(`/v1/experiments${qs({ limit: PAGE })}`, signal);
    setPages([page.experiments]);
    setCursor(page.next_cursor);
    return page;
  }, []);
  const [more, setMore] = useState<{ loading: boolean; error?: Error }>({ loading: false });
  useInterval(() => pages.length <= 1 && first.reload(), 15000);

  const loadMore = async () => {
    if (!cursor) return;
    setMore({ loading: true });
    try {
      const page = await getJSON<ExperimentPage>(`/v1/experiments${qs({ limit: PAGE, cursor })}`);
      setPages((p) => [...p, page.experiments]);
      setCursor(page.next_cursor);
      setMore({ loading: false });
    } catch (error) {
      setMore({ loading: false, error: error as Error });
    }
  };

  const all = useMemo(() => pages.flat(), [pages]);
  const workspaces = useMemo(() => new Set(all.map((e) => e.workspace)), [all]);
  const needle = search.trim().toLowerCase();
  const shown = needle ? all.filter((e) => e.name.toLowerCase().includes(needle) || e.workspace.toLowerCase().includes(needle)) : all;

  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1>Experiments</h1>
          <p class="subtitle">
            {first.data ? `${plural(all.length, "experiment")}${cursor ? "+" : ""}` : "\u00a0"}
          </p>
        </div>
        <input
          class="search"
          type="search"
          placeholder="Search experiments…"
          value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
          aria-label="Search experiments"
        />
      </div>
      <ErrorBanner error={first.error} onRetry={first.reload} />
      {first.loading && !first.data && <Spinner />}
      {first.data && all.length === 0 && (
        <Empty title="No experiments yet">
          Log a run and it shows up here a second later:
          <pre class="code">{`from producer import Experiment, Workspace

exp = Experiment(Workspace.from_env(), "my-experiment")
with exp.start_logging() as run:
    run.log("loss", 0.5)`}</pre>
          or run <span class="mono">runstream demo</span> for an example sweep.
        </Empty>
      )}
      {all.length > 0 && (
        <Table>
          <thead>
            <tr>
              <th>Name</th>
              {workspaces.size > 1 && <th>Workspace</th>}
              <th class="num">Runs</th>
              <th>By status</th>
              <th>Last activity</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={`${e.workspace}/${e.name}`}>
                <td>
                  <a class="strong" href={href.experiment(e.name, workspaces.size > 1 ? e.workspace : null)}>{e.name}</a>
                </td>
                {workspaces.size > 1 && <td class="muted">{e.workspace}</td>}
                <td class="num">{e.runs.toLocaleString("en-US")}</td>
                <td class="status-counts">
                  {Object.entries(e.statuses ?? {}).map(([status, n]) => (
                    <a key={status} class={`pill pill-${STATUS_CLASS[status] ?? "idle"}`} data-status={status}
                       href={withQuery(href.experiment(e.name, workspaces.size > 1 ? e.workspace : null), "status", status)}
                       title={`${n.toLocaleString("en-US")} ${status}: show them`}>
                      {n.toLocaleString("en-US")} {status}
                    </a>
                  ))}
                </td>
                <td><Time iso={e.last_activity_at ?? e.last_run_at} ago /></td>
              </tr>
            ))}
            {shown.length === 0 && (
              <tr>
                <td colSpan={5} class="muted center">No experiment matches “{search}”{cursor ? " among those loaded" : ""}.</td>
              </tr>
            )}
          </tbody>
        </Table>
      )}
      <ErrorBanner error={more.error} />
      {cursor && (
        <div class="more">
          <button class="btn" disabled={more.loading} onClick={loadMore}>
            {more.loading ? "Loading…" : "Load more"}
          </button>
        </div>
      )}
    </div>
  );
}
