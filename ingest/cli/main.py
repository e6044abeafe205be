"""The ``runstream`` command line: the one place that reads the environment.

Each subcommand builds a frozen :class:`~ingest.settings.Settings` from ``RUNSTREAM_*``
variables and hands it to the component it runs. Logging is configured here, once.
"""

from __future__ import annotations

# Only the standard library, the SDK and light ingest modules are imported at the top:
# `runstream --help` and `runstream sync` work with the SDK alone (`pip install runstream`),
# and `status` does not load the worker. Each command imports what it runs.
import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.api.blobstore import DEFAULT_MAX_BLOB_BYTES
from ingest.cli.redact import install as install_redaction
from ingest.cli.redact import redact, secrets_of
from ingest.settings import DEFAULT_GROUP_ID, Settings, redact_dsn
from ingest.stack.procs import StackError, progress
from producer import KafkaSecurity

if TYPE_CHECKING:
    from ingest.stack.stack import Stack

__all__ = ["main"]

#: Third-party modules of the ``server`` extra, and what installs them.
SERVER_MODULES = frozenset({"asyncpg", "aiohttp", "prometheus_client", "multidict", "yarl"})

Handler = Callable[[argparse.Namespace, Settings], int]

ENVIRONMENT_HELP = """\
environment:
  RUNSTREAM_KAFKA   Kafka bootstrap servers (default 127.0.0.1:9092; loopback = run it locally)
  RUNSTREAM_DB      PostgreSQL DSN (default: the local stack's own server)
  RUNSTREAM_API     API base URL (default http://127.0.0.1:8470)
  RUNSTREAM_HOME    spool, blobs and local stack data (default ~/.runstream)
  RUNSTREAM_TOPIC   events topic (default runstream.events; dead letters go to <topic>.dlq)
  RUNSTREAM_TOKEN   API bearer token: the SDK sends it; the API takes it as the admin token
  RUNSTREAM_WORKSPACE_TOKENS API tokens scoped to workspaces, JSON {"ws": "token" | [tokens]}
  RUNSTREAM_AGENT_TOKENS     API tokens of agents, per compute target, JSON {"gpu": "token"}
  RUNSTREAM_WORKSPACE workspace name the SDK puts on events (default "default")
  RUNSTREAM_PARTITIONS partitions of the topics `up` creates (default 6)
  RUNSTREAM_PG_PORT port of the local stack's PostgreSQL (default 54329)
  RUNSTREAM_METRICS_PORT port of the ingest worker's /metrics (default 8471)
Kafka security (SDK, workers and `up`/`status` alike):
""" + "".join(f"  {name} {meaning}\n" for name, meaning in KafkaSecurity.ENV_VARS.items())


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    home = getattr(args, "stack_home", None)
    if home:
        # Services started by `up` are told which home they belong to.
        settings = Settings(**{**settings.__dict__, "home": Path(home)})
    return settings


def _stack(settings: Settings) -> Stack:
    from ingest.stack.stack import Stack

    return Stack(settings)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    status = _stack(settings).up()
    _print_status(status, as_json=args.json)
    return 0 if all(c.get("ok") for c in status.values()) else 1


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack(settings)
    if args.purge and not args.yes:
        paths = stack.data_paths()
        if paths and not _confirm_purge(paths):
            print("runstream down --purge: nothing stopped or removed", file=sys.stderr)
            return 1
    stopped = stack.down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")
    if args.purge:
        removed = stack.purge()
        print("removed: " + ", ".join(map(str, removed)) if removed
              else "no cluster data to remove")
    return 0


def _confirm_purge(paths: Sequence[Path]) -> bool:
    """Ask on stderr, read one line of stdin (a terminal or a pipe): y or yes goes on."""
    listed = "".join(f"\n  {p}" for p in paths)
    print(f"runstream down --purge stops the stack and removes its data for good:{listed}",
          file=sys.stderr)
    print("Remove them? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if not args.verbose:  # a broker that is down is reported below, not as a log line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    status = _stack(settings).status()
    _print_status(status, as_json=args.json)
    return 0 if all(c.get("ok") for c in status.values()) else 1


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.app import run_api  # imported here: `up`/`status` stay light

    asyncio.run(
        run_api(
            settings,
            host=args.host,
            port=args.port,
            max_blob_bytes=args.max_blob_bytes,
            dsn=_stack(settings).dsn,
        )
    )
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.worker.service import run_worker

    return asyncio.run(
        run_worker(
            settings,
            dsn=_stack(settings).dsn,
            group_id=args.group,
            metrics_port=settings.metrics_port if args.metrics_port is None else args.metrics_port,
        )
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.db.maintenance import convert_to_timescaledb
    from ingest.db.migrate import migrate, storage_after_migrate

    dsn = _stack(settings).dsn
    applied = asyncio.run(migrate(dsn))
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "up to date")
    storage = asyncio.run(storage_after_migrate(dsn))
    if args.to_timescaledb:
        if not storage.timescaledb:
            print("runstream migrate: the timescaledb extension is not created in this "
                  "database (install it on the server, preload it with "
                  "shared_preload_libraries, CREATE EXTENSION timescaledb; `runstream up` "
                  "does both for its own cluster), so there is nothing to convert to",
                  file=sys.stderr)
            return 1
        moved = asyncio.run(convert_to_timescaledb(dsn))
        if storage.tables == "hypertable":
            print("metric chunks already are a TimescaleDB hypertable: nothing to convert")
        else:
            print(f"converted metric chunks to a TimescaleDB hypertable ({moved} rows moved), "
                  "with its compression policy and the hourly aggregate")
        return 0
    if storage.mismatch:
        print(f"runstream migrate: {storage.mismatch}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.cli.demo import run_demo

    stack = _stack(settings)
    stack.up()
    progress("running the diabetes Ridge sweep (one child run per alpha)…")
    result = run_demo(settings, dsn=stack.dsn)
    complete = sum(1 for s in result.statuses.values() if s == "Completed")
    print(f"experiment diabetes: parent run {result.parent_run_id}")
    print(
        f"  {len(result.child_run_ids)} child runs, best alpha {result.best_alpha:g} "
        f"(mse {result.best_mse:.1f})"
    )
    print(
        f"  stored: {result.stored_runs} runs ({complete} Completed), "
        f"{result.stored_points} metric points"
    )
    print("where to look:")
    print(f"  studio    {settings.api_url}/experiments/diabetes")
    print(f"            {settings.api_url}/runs/{result.parent_run_id}")
    run_url = f"{settings.api_url}/v1/runs/{result.parent_run_id}"
    print(f"  API       {run_url}")
    print("            and …/metrics, …/children, …/files, …/events (live)")
    print(f"  SQL       psql {redact_dsn(stack.dsn)}")
    print(
        "            SELECT run_id, display_name, status FROM runstream.runs "  # noqa: S608 - a hint
        f"WHERE parent_run_id = '{result.parent_run_id}';"
    )
    print(
        "            SELECT run_id, name, step, value FROM runstream.metric_points "
        "WHERE experiment = 'diabetes';"
    )
    print(f"  metrics   http://127.0.0.1:{settings.metrics_port}/metrics")
    ok = result.stored_runs == len(result.child_run_ids) + 1 and complete == result.stored_runs
    if not ok:
        print("runstream: not everything landed in time; see runstream status", file=sys.stderr)
    return 0 if ok else 1


def _counts(text: str) -> tuple[int, ...]:
    """``3`` or ``1,2,3``: positive worker counts."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or a list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be positive: {text!r}")
    return counts


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.bench.suite import BenchConfig, format_report, run_bench

    stack = _stack(settings)
    stack.up()
    workers = args.workers
    config = BenchConfig(
        duration_s=args.duration_s,
        producers=args.producers,
        workers=workers[0],
        capacity_workers=workers if len(workers) > 1 else (),
        partitions=args.partitions,
        latency_rate=args.latency_rate,
        latency_duration_s=args.latency_duration_s,
        log_call_duration_s=args.log_call_duration_s,
        log_calls=args.log_calls,
        sample_every=args.sample_every,
        shared_ranks=args.shared_ranks,
        control=args.control,
        capacity_duration_s=args.capacity_duration_s,
        overload_duration_s=args.overload_duration_s,
        overload_factor=args.overload_factor,
        overload_shared_cores=args.overload_shared_cores,
        overload_pipeline_cpu=args.overload_pipeline_cpu,
        close_timeout_s=args.close_timeout_s,
        quick_read=args.quick_read,
        jobs=args.jobs,
        agents=args.agents,
        dedup_keys=args.dedup_keys,
        maintenance_points=args.maintenance_points,
    )
    suites = ("write", "read") if args.suite == "all" else (args.suite,)
    result = run_bench(settings, dsn=stack.dsn, config=config, progress=progress, suites=suites)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.cli.progressbar import ProgressBar
    from producer import SyncProgress, Workspace, sync

    workspace = Workspace.from_env()
    bar = ProgressBar("sync")

    def show(p: SyncProgress) -> None:
        bar.update(
            p.events_done + p.blobs_done,
            p.events_total + p.blobs_total,
            f"events {p.events_done:,}/{p.events_total:,} blobs {p.blobs_done}/{p.blobs_total}",
        )

    try:
        result = sync(workspace, progress=show)
    finally:
        bar.close()
    print(
        f"sent {result.events_sent:,} events, uploaded {result.blobs_uploaded} artifacts; "
        f"left: {result.events_remaining:,} events, {result.blobs_remaining} artifacts"
    )
    if result.events_rejected or result.blobs_rejected or result.torn_bytes:
        print(
            f"discarded: {result.events_rejected} events Kafka refused, "
            f"{result.blobs_rejected} artifacts the API refused, "
            f"{result.torn_bytes} bytes of torn spool records"
        )
    if result.segments_skipped:
        print(f"{result.segments_skipped} spool files belong to a running process; it sends them")
    for error in result.errors:
        print(f"runstream: {error}", file=sys.stderr)
    return 0 if result.complete else 1


def cmd_agent(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.agent.client import AgentApiError
    from ingest.agent.service import AgentConfig, default_work_dir, run_agent
    from producer import Workspace

    api_url = (args.api or settings.api_url).rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        print(f"runstream agent: error: --api must be an http(s) URL, not {api_url!r}",
              file=sys.stderr)
        return 2
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(settings.home,
                                                                           args.target)
    # What the runs' SDK logs with: the agent's own API, token and Kafka (+ security).
    run_variables = {
        "RUNSTREAM_API": api_url,
        "RUNSTREAM_TOKEN": settings.token.value,
        "RUNSTREAM_KAFKA": settings.kafka_bootstrap,
        "RUNSTREAM_TOPIC": settings.topic,
        **{name: value for name in KafkaSecurity.ENV_VARS if (value := os.environ.get(name))},
    }
    config = AgentConfig(target=args.target, slots=args.slots, work_dir=work_dir.absolute(),
                         grace_s=args.grace_s, base_env=dict(os.environ),
                         run_variables=run_variables)

    def workspace(name: str) -> Workspace:
        return Workspace(name=name, kafka_bootstrap=settings.kafka_bootstrap, api_url=api_url,
                         home=settings.home, topic=settings.topic, token=settings.token.value,
                         kafka_security=settings.kafka_security)

    progress(f"agent for target {args.target!r}: {args.slots} slot(s), work dir {work_dir}, "
             f"API {api_url}; SIGTERM/Ctrl-C stops taking work and waits for the running "
             "runs, a second one cancels them")
    try:
        return asyncio.run(run_agent(config, api_url=api_url, token=settings.token.value,
                                     make_workspace=workspace))
    except AgentApiError as exc:  # the API refused the registration (a bad target, a token)
        print(f"runstream agent: error: {exc}", file=sys.stderr)
        return 2


#: What ``runstream cancel`` says for each action of ``POST /v1/runs/{id}/cancel``.
CANCEL_ACTIONS = {
    "canceled": "canceled (it was queued)",
    "cancel_requested": "cancel requested: its agent stops it (SIGTERM, a grace period, "
    "SIGKILL) and reports Canceled",
    "none": "nothing to cancel: it has already ended",
}


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    url = f"{settings.api_url}/v1/runs/{quote(args.run_id, safe='')}/cancel"
    headers = {"Authorization": f"Bearer {settings.token.value}"} if settings.token.value else {}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our API
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        print(f"runstream cancel: error: {exc.code}: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return 0
    action = str(answer.get("action"))
    said = CANCEL_ACTIONS.get(action, action)
    print(f"run {answer.get('run_id', args.run_id)}: {said} (state: {answer.get('state')})")
    return 0


def _print_status(status: dict[str, dict[str, object]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, sort_keys=True))
        return
    for name, info in status.items():
        mark = "ok  " if info.get("ok") else "DOWN"
        endpoint = (
            info.get("bootstrap")
            or info.get("dsn")
            or info.get("url")
            or info.get("metrics_url")
            or ""
        )
        extra = ""
        if name == "postgres" and info.get("ok"):
            extra = _storage_line(info)
        if info.get("error"):
            extra += f"  {info['error']}"
        print(f"{mark} {name:<9} {endpoint}{extra}")
        if name == "postgres" and info.get("ok"):
            for line in _maintenance_lines(info):
                print(f"{'':<15}{line}")


def _storage_line(info: dict[str, object]) -> str:
    """What the metric tables really are, beside the extension's version."""
    ts, tables = info.get("timescaledb"), info.get("tables")
    if tables is None:
        return f"  (not migrated yet{f'; TimescaleDB {ts}' if ts else ''})"
    if tables == "hypertable":
        return f"  (TimescaleDB {ts}: metric chunks in a hypertable)"
    if ts:
        return f"  (plain PostgreSQL {tables}; TimescaleDB {ts} installed but NOT used)"
    return f"  (plain PostgreSQL {tables}, no TimescaleDB)"


def _maintenance_lines(info: dict[str, object]) -> list[str]:
    """One line per TimescaleDB job: who runs it and how it fares; the conversion hint."""
    lines = []
    jobs = info.get("maintenance")
    for job in jobs if isinstance(jobs, list) else []:
        age = job.get("last_success_age_s")
        last = "never" if age is None else f"{_short_age(age)} ago"
        state = job.get("state")
        if state == "ok":
            said = "ok, run by the TimescaleDB scheduler"
        elif state == "runstream":
            said = ("DEGRADED: the TimescaleDB scheduler fails it "
                    f"({job.get('scheduler_failures')} failures, {job.get('error')}); "
                    "Runstream's workers run it")
        else:
            said = (f"FAILING: {job.get('scheduler_failures')} scheduler failures "
                    f"({job.get('error') or 'overdue'})")
            if job.get("runstream_error"):
                said += f"; Runstream's run failed too: {job.get('runstream_error')}"
        lines.append(f"{job.get('kind')} (job {job.get('job_id')}): {said}; "
                     f"last success {last}")
    if info.get("mismatch"):
        lines.append(f"NOTE: {info['mismatch']}")
    return lines


def _short_age(seconds: object) -> str:
    s = float(seconds) if isinstance(seconds, int | float) else 0.0
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream",
        description=(
            "Runstream: experiment-tracking ingestion over Kafka into PostgreSQL/TimescaleDB."
        ),
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    up = add(
        "up",
        cmd_up,
        "Start the local stack (Kafka, PostgreSQL and the runstream services) under "
        "RUNSTREAM_HOME, idempotently, and print the endpoints. The first run fetches the "
        "Kafka jars with Maven and may install PostgreSQL 15 with apt-get.",
    )
    up.add_argument("--json", action="store_true", help="print the status as one JSON object")
    down = add("down", cmd_down,
               "Stop everything `up` started under RUNSTREAM_HOME, and nothing else.")
    down.add_argument(
        "--purge", action="store_true",
        help="then remove the cluster's data for good, wherever it lives: PostgreSQL's "
        "directory (as root /var/lib/runstream/<id>), the Kafka log, the API's blob store "
        "and the logs (kept: the Kafka jars, the SDK's spool, the agent's directories); "
        "asks first",
    )
    down.add_argument("--yes", action="store_true", help="with --purge: do not ask")
    status = add("status", cmd_status, "Show each component's endpoint and health.")
    status.add_argument(
        "--json", action="store_true", help="print one JSON object, a key per component"
    )
    api = add(
        "api",
        cmd_api,
        "Serve the HTTP API (runs, metrics, files, logs, compute targets, live updates, "
        "blob uploads, the schema registry, health and Prometheus metrics) on "
        "RUNSTREAM_API's host:port, reading RUNSTREAM_DB (or the local stack's database), "
        "until SIGTERM or Ctrl-C.",
    )
    api.add_argument("--host", help="bind address (default: RUNSTREAM_API's host)")
    api.add_argument("--port", type=int, help="port (default: RUNSTREAM_API's port, 8470)")
    api.add_argument(
        "--max-blob-bytes",
        type=int,
        default=DEFAULT_MAX_BLOB_BYTES,
        help="largest artifact upload accepted (default 512 MiB)",
    )
    ingest = add(
        "ingest",
        cmd_ingest,
        "Run one ingest worker: consume the events topic in a consumer group and persist "
        "every event exactly once into PostgreSQL, serving Prometheus metrics. Start as "
        "many as you like, on any machines; run `runstream migrate` first.",
    )
    ingest.add_argument(
        "--group", default=DEFAULT_GROUP_ID, help=f"consumer group (default {DEFAULT_GROUP_ID})"
    )
    ingest.add_argument(
        "--metrics-port",
        type=int,
        help="port of /metrics (default RUNSTREAM_METRICS_PORT or 8471; 0 picks a free one)",
    )
    migrate_cmd = add(
        "migrate",
        cmd_migrate,
        "Apply the numbered SQL migrations to RUNSTREAM_DB (or the local stack's database). "
        "A database migrated as plain PostgreSQL stays so when TimescaleDB is installed "
        "later (it says so and how to convert); --to-timescaledb converts it.",
    )
    migrate_cmd.add_argument(
        "--to-timescaledb", action="store_true",
        help="convert plain-PostgreSQL metric storage to TimescaleDB (a compressed "
        "hypertable and the hourly aggregate) in one transaction: all or nothing, run it "
        "again after an interruption; ingest waits on the table while it copies",
    )
    add(
        "demo",
        cmd_demo,
        "Run the product page's example end to end: start the local stack if needed, sweep "
        "Ridge regression's alpha over scikit-learn's diabetes data (a child run per alpha), "
        "wait until everything is stored and print where to look.",
    )
    add(
        "sync",
        cmd_sync,
        "Send events and artifact bytes left in RUNSTREAM_HOME/spool (Kafka or the API was "
        "unreachable, or the process died) and delete them once delivered, with a progress "
        "bar. Exits non-zero while something is left.",
    )
    bench = add(
        "bench",
        cmd_bench,
        "Measure on this machine, in a database and topic of its own: `write` (log-call "
        "latency with Kafka up and down, end-to-end throughput and log-to-commit latency, the "
        "COPY baseline), `read` (downsampling a 1M-point series, get_metrics of 100x10k "
        "points, run details at 200 req/s), `faults` (a known workload through worker kills "
        "and rebalances, counting lost and doubled points), `jobs` (on the stack itself, with "
        "compute targets of its own: "
        "submit → Running with an idle agent, --jobs queued jobs drained by --agents agents), "
        "`studio` (in headless Chromium: a 10M-point series' chart and 100 runs overlaid, from "
        "the first request to the first draw; --quick-read: 1M points), `overload` (the "
        "pipeline's capacity, then producers at --overload-factor x it for "
        "--overload-duration-s: spooled, dropped, committed, and the drain after logging; "
        "the broker, PostgreSQL and the workers on half of the CPUs, held to "
        "--overload-pipeline-cpu of one, the producers on the other half, unless "
        "--overload-shared-cores), "
        "`dedup` (batch-write throughput with --dedup-keys dedup keys stored vs an empty "
        "store, and the layout before migration 0011; about 15 minutes and 20 GB of "
        "temporary disk at 100 M keys; --quick-read: 1M keys), `maintenance` (TimescaleDB: "
        "batch-write throughput before, during and after a compression pass over "
        "--maintenance-points old points, with late points into the chunks compressed; "
        "skipped on plain PostgreSQL; --quick-read: 2M points). "
        "`write` times run.log with Kafka up, down and with --shared-ranks ranks beside the "
        "workers, each beside a control loop whose call lasts as long as the log call's p50 "
        "and runs no code of ours, and attributes every call over 5 ms to our own threads or "
        "to the OS (a pause of the whole machine that the control suffered at the same "
        "moment counts as the OS's); --workers 1,2,3 runs its end-to-end once per worker count, "
        "with CPU seconds per million points of producers, broker, workers and PostgreSQL. "
        "`all` = write + read (about 5 minutes). Prints a report, or JSON with --json.",
    )
    bench.add_argument(
        "--quick-read",
        action="store_true",
        help="read, studio, dedup and maintenance suites at a fraction of their sizes (a "
        "smoke test, not figures)",
    )
    bench.add_argument(
        "suite",
        nargs="?",
        default="all",
        choices=("all", "write", "read", "faults", "jobs", "studio", "overload", "dedup",
                 "maintenance"),
        help="what to measure (default all = write + read)",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--jobs", type=int, default=1000, help="jobs suite: queued jobs (1000)")
    bench.add_argument("--agents", type=int, default=2, help="jobs suite: agents, 1 slot each (2)")
    bench.add_argument(
        "--dedup-keys", type=int, default=100_000_000,
        help="dedup suite: dedup keys stored before measuring (100,000,000)",
    )
    bench.add_argument(
        "--maintenance-points", type=int, default=50_000_000,
        help="maintenance suite: old points stored to compress (50,000,000)",
    )
    bench.add_argument("--duration-s", type=float, default=60.0, help="end-to-end run length (60)")
    bench.add_argument("--producers", type=int, default=2, help="training processes (2)")
    bench.add_argument(
        "--workers",
        type=_counts,
        default=(1,),
        help="ingest workers (1); a list such as 1,2,3 runs the end-to-end once per count",
    )
    bench.add_argument("--partitions", type=int, default=6, help="topic partitions (6)")
    bench.add_argument(
        "--latency-rate", type=float, default=50_000, help="paced rate for latency (50000/s)"
    )
    bench.add_argument(
        "--latency-duration-s", type=float, default=20.0, help="paced run length (20)"
    )
    bench.add_argument(
        "--log-call-duration-s", type=float, default=5.0, help="each timed log-call loop (5)"
    )
    bench.add_argument(
        "--log-calls", type=int, default=0,
        help="each timed log-call loop makes this many calls instead (e.g. 10000000)",
    )
    bench.add_argument(
        "--sample-every", type=int, default=64,
        help="calls between the timed loops' CPU-time samples (64; 0: no stall attribution)",
    )
    bench.add_argument(
        "--shared-ranks", type=int, default=3,
        help="ranks logging beside the workers in the shared-cores log-call loop (3)",
    )
    bench.add_argument(
        "--control", choices=("spin", "python"), default="spin",
        help="write: the control loop beside each log-call loop, as long as the log call: "
             "a busy wait on the clock (spin), or interpreter work, array stores and a dict "
             "lookup, that the caches and memory traffic of other processes slow as they "
             "slow the log call (python)",
    )
    bench.add_argument(
        "--capacity-duration-s", type=float, default=20.0,
        help="overload: the flat-out run that measures capacity (20)",
    )
    bench.add_argument(
        "--overload-duration-s", type=float, default=60.0,
        help="overload: how long producers log above capacity (60)",
    )
    bench.add_argument(
        "--overload-factor", type=float, default=1.5,
        help="overload: the producers' rate, times capacity (1.5; flat out if they cannot)",
    )
    bench.add_argument(
        "--overload-shared-cores", action="store_true",
        help="overload: every process on every core (by default the pipeline runs on one "
             "half of the CPUs and the producers on the other, while measured)",
    )
    bench.add_argument(
        "--overload-pipeline-cpu", type=float, default=0.5, metavar="SHARE",
        help="overload: hold the broker, PostgreSQL and the workers to this share of one "
             "CPU (a cgroup CPU quota, root only; 0: none), capacity run included, so that "
             "producers on the other CPU can log faster than the pipeline stores (0.5)",
    )
    bench.add_argument(
        "--close-timeout-s", type=float, default=600.0,
        help="how long each producer's close may take to deliver or replay its spool (600)",
    )
    agent = add(
        "agent",
        cmd_agent,
        "Run submitted scripts for one compute target: register with the API (RUNSTREAM_API, "
        "RUNSTREAM_TOKEN), keep one long poll open for new runs and cancels, run up to "
        "--slots of them at once, each in a fresh working directory from its snapshot, with "
        "its environment (the agent's Python, or a cached virtualenv with the pip "
        "packages), streaming its output and statuses through Kafka (RUNSTREAM_KAFKA) like "
        "any run. SIGTERM or Ctrl-C: take no new runs and wait for the running ones; a "
        "second: cancel them; a third: kill them.",
    )
    agent.add_argument("--target", required=True, help="the compute target it serves")
    agent.add_argument("--slots", type=_positive_int, default=1,
                       help="runs at once, the target's node count (default 1)")
    agent.add_argument(
        "--work-dir",
        help="working directories and built environments (default "
        "RUNSTREAM_HOME/agent/<target>)",
    )
    agent.add_argument("--grace-s", type=float, default=10.0,
                       help="seconds from SIGTERM to SIGKILL when a run is stopped (default 10)")
    agent.add_argument("--api", help="API base URL (default RUNSTREAM_API)")
    cancel = add(
        "cancel",
        cmd_cancel,
        "Cancel a submitted run: a queued one at once; a running one is stopped by its agent "
        "(SIGTERM, a grace period, SIGKILL) and ends Canceled.",
    )
    cancel.add_argument("run_id", help="the run's id")
    cancel.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    for service in (api, ingest, agent):
        # Set by `runstream up` so `down` finds exactly the services of one home.
        service.add_argument("--stack-home", help=argparse.SUPPRESS)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=log_format)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    handler: Handler = args.handler
    try:
        settings = _settings(args)
    except ValueError as exc:  # a malformed environment variable; the message names it
        print(f"runstream: error: {exc}", file=sys.stderr)
        return 2
    secrets = secrets_of(settings)
    install_redaction(secrets, log_format)
    try:
        return handler(args, settings)
    except StackError as exc:
        print(f"runstream: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = _extra_for(exc.name)
        if extra is None:
            raise
        print(
            f"runstream {args.command}: needs the {extra!r} extra ({exc.name} is not installed): "
            f"pip install 'runstream[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except _connection_errors() as exc:
        if args.verbose:  # through logging, so the traceback is redacted too
            logging.getLogger("runstream").exception("runstream %s failed", args.command)
            return 1
        what = f"{type(exc).__name__}: {exc}"
        print(
            f"runstream {args.command}: error: {redact(what, secrets)} (-v shows the traceback)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


def _extra_for(module: str | None) -> str | None:
    top = (module or "").partition(".")[0]
    if top in SERVER_MODULES:
        return "server"
    return {"psutil": "bench", "sklearn": "demo", "matplotlib": "demo"}.get(top)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What a command's failure to reach a service looks like (asyncpg's only when the
    server extra is installed)."""
    try:
        import asyncpg
    except ModuleNotFoundError:
        return (OSError,)
    return (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


if __name__ == "__main__":
    sys.exit(main())
