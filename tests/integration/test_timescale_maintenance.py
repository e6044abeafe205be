"""TimescaleDB maintenance and honest storage mode (issue 13), on the real server.

The TimescaleDB tests skip, saying so, where the server lacks the extension; the plain ones
run everywhere. A job "the scheduler cannot run" is made for real: the job's owner becomes
a role that may not touch the tables, so the extension's background worker fails it
(permission denied) while ``CALL run_job`` from Runstream's own connection succeeds — the
situation of issue 13, where every scheduler run failed and ``run_job`` did not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from ingest.db.maintenance import MaintenanceRunner, read_storage
from ingest.db.migrate import migrate
from tests.helpers import DbFactory, StackInfo, TopicFactory, unique
from tests.integration.api_reads import get_json, read_api
from tests.integration.helpers import (
    NewDb,
    WorkerFactory,
    enable_timescaledb,
    fetch,
    run_id,
    runstream,
    wait_for,
)

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000


def now_us() -> int:
    return int(time.time() * 1e6)


async def storage_of(dsn: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await read_storage(conn)
    finally:
        await conn.close()


async def execute(dsn: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def job_id(dsn: str, proc_name: str) -> int:
    (row,) = await fetch(dsn, "SELECT job_id FROM timescaledb_information.jobs "
                              "WHERE proc_name = $1", proc_name)
    return int(row["job_id"])


async def partly_compressed_chunks(dsn: str) -> int:
    """Compressed chunks that took rows since (status bit 8, "partial")."""
    (row,) = await fetch(dsn, "SELECT count(*) AS n FROM _timescaledb_catalog.chunk c "
                              "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
                              "WHERE h.table_name = 'metric_chunks' AND c.status & 8 = 8")
    return int(row["n"])


async def compress_after_one_day(dsn: str, job: int) -> None:
    """A test-sized ``compress_after`` for the compression policy."""
    await execute(dsn, "SELECT alter_job($1, config => jsonb_set(j.config, '{compress_after}', "
                       "'\"1 day\"')) FROM timescaledb_information.jobs j WHERE j.job_id = $1",
                  job)


async def pause_policies(dsn: str) -> None:
    """Keep the extension's scheduler off Runstream's policies (``run_job`` still runs them)."""
    await execute(dsn, "SELECT alter_job(job_id, scheduled => false) "
                       "FROM timescaledb_information.jobs "
                       "WHERE hypertable_schema = 'runstream_data'")


async def chunk_states(dsn: str) -> list[str]:
    """Per metric chunk, oldest first: ``uncompressed`` (never compressed), ``partial``
    (compressed, with rows taken since: a pass of the policy recompresses it) or
    ``compressed`` (every row in its compressed part)."""
    rows = await fetch(dsn, "SELECT c.status FROM _timescaledb_catalog.chunk c "
                            "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
                            "JOIN _timescaledb_catalog.dimension_slice s ON s.id = ("
                            "  SELECT cc.dimension_slice_id FROM _timescaledb_catalog"
                            "  .chunk_constraint cc WHERE cc.chunk_id = c.id"
                            "  AND cc.dimension_slice_id IS NOT NULL LIMIT 1) "
                            "WHERE h.table_name = 'metric_chunks' AND NOT c.dropped "
                            "ORDER BY s.range_start")
    return ["uncompressed" if not r["status"] & 1 else
            "partial" if r["status"] & 8 else "compressed" for r in rows]


async def chunks_and_parts(dsn: str) -> list[tuple[str, str]]:
    """Per metric chunk that is compressed, oldest first: its table and its compressed
    part's table."""
    rows = await fetch(dsn, "SELECT format('%I.%I', i.chunk_schema, i.chunk_name) AS chunk, "
                            "format('%I.%I', z.schema_name, z.table_name) AS part "
                            "FROM timescaledb_information.chunks i "
                            "JOIN _timescaledb_catalog.chunk c "
                            "  ON (c.schema_name, c.table_name) = (i.chunk_schema, i.chunk_name) "
                            "JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id "
                            "WHERE i.hypertable_name = 'metric_chunks' ORDER BY i.range_start")
    return [(r["chunk"], r["part"]) for r in rows]


async def relation_locks(dsn: str, pid: int) -> set[tuple[str, str, bool]]:
    """(relation, mode, granted) of the relation locks backend ``pid`` holds or awaits."""
    rows = await fetch(dsn, "SELECT relation::regclass::text AS rel, mode, granted FROM pg_locks "
                            "WHERE pid = $1 AND locktype = 'relation'", pid)
    return {(r["rel"], r["mode"], bool(r["granted"])) for r in rows}


async def compressed_chunks(dsn: str) -> list[bool]:
    """Per metric chunk, oldest first: every row compressed (no pass left to make)."""
    return [state == "compressed" for state in await chunk_states(dsn)]


def cli_env(dsn: str) -> dict[str, str]:
    return {**os.environ, "RUNSTREAM_DB": dsn}


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


@pytest.fixture
async def ts_dsn(new_db: NewDb) -> str:
    return await new_db("timescaledb")


@pytest.fixture
async def weak_owner(ts_dsn: str) -> AsyncIterator[str]:
    """A login role that may not touch Runstream's tables, dropped at the end."""
    role = unique("rs_weak_")
    await execute(ts_dsn, f'CREATE ROLE "{role}" LOGIN')
    yield role
    await execute(ts_dsn, "UPDATE _timescaledb_config.bgw_job "
                          "SET owner = current_user::text::regrole "
                          "WHERE owner = $1::text::regrole", role)
    await execute(ts_dsn, f'DROP ROLE IF EXISTS "{role}"')


async def fail_in_the_scheduler(dsn: str, job: int, role: str, runs: int) -> None:
    """Make the extension's scheduler run ``job`` as ``role`` until ``runs`` runs failed."""
    await execute(dsn, "UPDATE _timescaledb_config.bgw_job SET owner = $2::text::regrole "
                       "WHERE id = $1", job, role)
    for n in range(1, runs + 1):
        await execute(dsn, "SELECT alter_job($1, next_start => now())", job)

        async def failed(n: int = n) -> bool:
            rows = await fetch(dsn, "SELECT total_failures FROM timescaledb_information.job_stats "
                                    "WHERE job_id = $1", job)
            return bool(rows) and rows[0]["total_failures"] >= n

        await wait_for(failed, timeout_s=120, what=f"scheduler failure {n} of job {job}")


def old_and_new_points(rid: str, base: int, name: str = "loss") -> list[dict[str, Any]]:
    """A series of 300 points in six events of 50: steps 0-99 20 days before ``base``,
    100-199 10 days before (chunks to compress), 200-299 at ``base``; step i has the value
    i / 2, one a second."""
    f = EventFactory(rid)
    events = []
    for day, first in ((20, 0), (20, 50), (10, 100), (10, 150), (0, 200), (0, 250)):
        times = [base - day * DAY_US + (first % 100 + i) * 1_000_000 for i in range(50)]
        values: list[float] = [float(first + i) * 0.5 for i in range(50)]
        events.append(f.metrics(packed_series(name, values, steps=range(first, first + 50),
                                              times_us=times)))
    return events


async def store_in_partial_chunks(dsn: str, events: list[dict[str, Any]]) -> None:
    """Store ``events`` one batch each, as they come: the batch that creates a chunk
    compresses it with its own points (migration 0017), the next ones leave it partial —
    old chunks with rows for the compression policy to compress."""
    await store_events(dsn, events, batch=1)


# -- plain PostgreSQL (runs everywhere) ------------------------------------------------------


async def test_plain_storage_says_partitions_has_no_jobs_and_nothing_to_run(new_db: NewDb) -> None:
    dsn = await new_db()
    storage = await storage_of(dsn)
    if storage.timescaledb:  # the server has the extension but this database does not
        pytest.fail("a plain test database has the timescaledb extension")
    assert (storage.tables, storage.backend, storage.mode) == ("partitions", "partitioned",
                                                               "postgresql")
    assert storage.jobs == ()
    assert storage.degraded() == []
    assert storage.mismatch is None
    assert await MaintenanceRunner(dsn, min_failures=1).tick() == []
    result = runstream("migrate", "--to-timescaledb", env=cli_env(dsn))
    assert result.returncode == 1
    assert "timescaledb extension is not created in this database" in result.stderr
    assert (await storage_of(dsn)).tables == "partitions"


async def test_readyz_and_status_on_plain_postgresql(new_db: NewDb, tmp_path: Path) -> None:
    dsn = await new_db()
    async with read_api(dsn, tmp_path / "blobs") as api, aiohttp.ClientSession() as http:
        ready = await get_json(http, f"{api.url}/readyz")
        assert ready == {"status": "ready",
                         "checks": {"blobs": "ok", "database": "ok", "maintenance": "ok"}}
        async with http.get(f"{api.url}/metrics") as r:
            text = await r.text()
        assert metric_samples(text, "runstream_maintenance_last_success_age_seconds") == {}
    result = runstream("status", "--json", env=cli_env(dsn))
    pg = json.loads(result.stdout)["postgres"]
    assert pg | {"tables": "partitions", "mode": "postgresql", "maintenance": [],
                 "degraded": [], "mismatch": None} == pg


# -- TimescaleDB -----------------------------------------------------------------------------


async def test_a_job_the_scheduler_keeps_failing_is_reported_then_run_by_runstream(
    ts_dsn: str, weak_owner: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = ts_dsn
    job = await job_id(dsn, "policy_compression")
    await fail_in_the_scheduler(dsn, job, weak_owner, runs=2)
    await store_in_partial_chunks(dsn, old_and_new_points(run_id(), now_us()))
    await compress_after_one_day(dsn, job)
    assert await chunk_states(dsn) == ["partial"] * 3

    # Reported: status (table and JSON), /readyz (degraded, still 200), /metrics.
    storage = await storage_of(dsn)
    (seen,) = [j for j in storage.jobs if j.job_id == job]
    assert seen.kind == "compression"
    assert seen.scheduler_failures >= 2
    assert seen.state() == "failing", seen
    assert seen.error, seen
    status = runstream("status", "--json", env=cli_env(dsn))
    pg = json.loads(status.stdout)["postgres"]
    (reported,) = [j for j in pg["maintenance"] if j["job_id"] == job]
    assert reported["state"] == "failing"
    assert "compression: failing" in pg["degraded"]
    table = runstream("status", env=cli_env(dsn)).stdout
    assert f"compression (job {job}): FAILING" in table, table
    async with read_api(dsn, tmp_path / "blobs") as api, aiohttp.ClientSession() as http:
        ready = await get_json(http, f"{api.url}/readyz")
        assert ready["status"] == "degraded"
        assert ready["checks"]["maintenance"] == "degraded"
        assert "compression: failing" in ready["degraded"]
        async with http.get(f"{api.url}/metrics") as r:
            text = await r.text()
        # never, or only the scheduler's first run at creation, before the owner changed
        assert metric_samples(text, "runstream_maintenance_last_success_age_seconds")[
            '{kind="compression"}'] > 0
        assert metric_samples(text, "runstream_maintenance_failures")[
            '{kind="compression",runner="scheduler"}'] >= 2
        assert metric_samples(text, "runstream_maintenance_run_by_runstream")[
            '{kind="compression"}'] == 1

        # Run by Runstream, one runner at a time, then not again before its schedule.
        runners = [MaintenanceRunner(dsn, runner=f"test-{i}") for i in range(3)]
        with caplog.at_level(logging.INFO, logger="ingest.db.maintenance"):
            runs = await asyncio.gather(*(r.tick() for r in runners))
            ours = [run for batch in runs for run in batch if run.job_id == job]
            assert len(ours) == 1, ours
            assert ours[0].ok, ours
            assert await compressed_chunks(dsn) == [True, True, False]
            assert [r for r in await runners[0].tick() if r.job_id == job] == []
        # One warning per worker process (each runner here), however many ticks: the job,
        # its error and what Runstream does about it.
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                  and f"job {job} (compression" in r.getMessage()]
        assert len(warned) == 3, warned
        assert "keeps failing in the extension's scheduler" in warned[0]
        assert f"Runstream runs it itself from the ingest workers (CALL run_job({job})" in (
            warned[0])

        (after,) = [j for j in (await storage_of(dsn)).jobs if j.job_id == job]
        assert after.state() == "runstream"
        assert after.runstream_runs == 1
        await asyncio.sleep(5.1)  # the API re-reads the database at most every 5 s
        ready = await get_json(http, f"{api.url}/readyz")
        assert ready["status"] == "degraded"
        assert any(d.startswith("compression: the TimescaleDB scheduler fails it")
                   for d in ready["degraded"])
        async with http.get(f"{api.url}/metrics") as r:
            text = await r.text()
        age = metric_samples(text, "runstream_maintenance_last_success_age_seconds")
        assert age['{kind="compression"}'] < 600
    table = runstream("status", env=cli_env(dsn)).stdout
    assert f"compression (job {job}): DEGRADED" in table
    assert "Runstream's workers run it" in table


async def test_a_runstream_ingest_worker_runs_the_job_the_scheduler_fails_and_says_so(
    ts_dsn: str, weak_owner: str, stack: StackInfo, topic_factory: TopicFactory,
    worker_procs: WorkerFactory,
) -> None:
    dsn = ts_dsn
    job = await job_id(dsn, "policy_compression")
    await fail_in_the_scheduler(dsn, job, weak_owner, runs=2)
    await store_in_partial_chunks(dsn, old_and_new_points(run_id(), now_us()))
    await compress_after_one_day(dsn, job)
    topic = await topic_factory(partitions=1)
    proc = worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                              group=unique("maint-"))

    async def ran() -> bool:
        rows = await fetch(dsn, "SELECT total_runs, consecutive_failures "
                                "FROM runstream_data.maintenance_runs WHERE job_id = $1", job)
        return bool(rows) and rows[0]["total_runs"] >= 1

    await wait_for(ran, timeout_s=120, what="the worker's run of the compression job")
    assert await compressed_chunks(dsn) == [True, True, False]
    assert proc.stop() == 0, proc.output()
    lines = [line for line in proc.output().splitlines()
             if f"job {job} (compression" in line and "keeps failing" in line]
    assert len(lines) == 1, proc.output()[-3000:]


async def test_a_job_the_scheduler_runs_is_left_to_it(ts_dsn: str) -> None:
    dsn = ts_dsn
    await store_in_partial_chunks(dsn, old_and_new_points(run_id(), now_us()))
    job = await job_id(dsn, "policy_compression")
    await compress_after_one_day(dsn, job)
    await execute(dsn, "SELECT alter_job($1, next_start => now())", job)

    async def settled() -> bool:
        (seen,) = [j for j in (await storage_of(dsn)).jobs if j.job_id == job]
        if seen.scheduler_last_status == "Failed":
            return True
        return (seen.scheduler_last_status == "Success"
                and await compressed_chunks(dsn) == [True, True, False])

    await wait_for(settled, timeout_s=120, what=f"the scheduler's run of job {job}")
    (seen,) = [j for j in (await storage_of(dsn)).jobs if j.job_id == job]
    if seen.scheduler_last_status != "Success":
        pytest.skip(f"the TimescaleDB scheduler fails jobs on this server ({seen.error}): "
                    "the test of a working scheduler cannot run here")
    assert seen.state() == "ok"
    assert await compressed_chunks(dsn) == [True, True, False]  # by the scheduler
    assert [r for r in await MaintenanceRunner(dsn, min_failures=1).tick()
            if r.job_id == job] == []
    (row,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream_data.maintenance_runs")
    assert row["n"] == 0


async def test_a_job_whose_scheduler_record_is_healthy_is_left_to_it(ts_dsn: str) -> None:
    """The same decision where the scheduler cannot run (as on this project's machines):
    the record a working scheduler leaves — its last run a success, moments ago, the next
    one due later — written into the extension's own job statistics, the table its
    ``job_stats`` view reads. Runstream then reports the job ok and runs nothing; with the
    record of a failed run instead, it takes the job over."""
    dsn = ts_dsn
    job = await job_id(dsn, "policy_compression")
    # The real scheduler must not write over the record meanwhile: its next start is later.
    await execute(dsn, "SELECT alter_job($1, next_start => now() + interval '1 day')", job)

    async def record(success: bool) -> None:
        await execute(dsn, """
            INSERT INTO _timescaledb_internal.bgw_job_stat AS s
                (job_id, last_start, last_finish, next_start, last_successful_finish,
                 last_run_success, total_runs, total_duration, total_duration_failures,
                 total_successes, total_failures, total_crashes, consecutive_failures,
                 consecutive_crashes, flags)
            VALUES ($1, now() - interval '10 s', now() - interval '9 s', now() + interval '1 day',
                    CASE WHEN $2 THEN now() - interval '9 s' ELSE '-infinity' END, $2, 1,
                    interval '1 s', interval '0', CASE WHEN $2 THEN 1 ELSE 0 END,
                    CASE WHEN $2 THEN 0 ELSE 1 END, 0, CASE WHEN $2 THEN 0 ELSE 1 END, 0, 0)
            ON CONFLICT (job_id) DO UPDATE SET
                last_start = excluded.last_start, last_finish = excluded.last_finish,
                next_start = excluded.next_start,
                last_successful_finish = excluded.last_successful_finish,
                last_run_success = excluded.last_run_success,
                consecutive_failures = excluded.consecutive_failures""", job, success)

    await record(success=True)
    (seen,) = [j for j in (await storage_of(dsn)).jobs if j.job_id == job]
    assert (seen.scheduler_last_status, seen.state()) == ("Success", "ok")
    assert [r for r in await MaintenanceRunner(dsn, min_failures=1).tick()
            if r.job_id == job] == []
    (row,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream_data.maintenance_runs "
                              "WHERE job_id = $1", job)
    assert row["n"] == 0  # (the other jobs fail here for real: Runstream runs those)

    await record(success=False)
    (seen,) = [j for j in (await storage_of(dsn)).jobs if j.job_id == job]
    assert seen.scheduler_last_status == "Failed"
    assert [r.job_id for r in await MaintenanceRunner(dsn, min_failures=1).tick()
            if r.job_id == job] == [job]


async def test_compressed_chunks_read_the_same_and_take_late_points_exactly_once(
    ts_dsn: str, tmp_path: Path
) -> None:
    dsn = ts_dsn
    await pause_policies(dsn)  # run below by hand, never by the scheduler meanwhile
    rid = run_id()
    base = now_us()
    events = old_and_new_points(rid, base)
    await store_in_partial_chunks(dsn, events)
    async with read_api(dsn, tmp_path / "blobs") as api, aiohttp.ClientSession() as http:

        async def reads() -> tuple[Any, Any, Any]:
            whole = await get_json(http, f"{api.url}/v1/runs/{rid}/metrics")
            coarse = await get_json(
                http, f"{api.url}/v1/runs/{rid}/metrics/loss?max_points=10")
            exact = await get_json(
                http, f"{api.url}/v1/runs/{rid}/metrics/{quote('loss')}?max_points=1000")
            return whole, coarse, exact

        before = await reads()
        job = await job_id(dsn, "policy_compression")
        await compress_after_one_day(dsn, job)
        await execute(dsn, f"CALL run_job({job})")
        assert await compressed_chunks(dsn) == [True, True, False]
        assert await reads() == before

        # Late points, out of order, into both compressed chunks, each at a step already
        # there and half a second after its point: read back right after it.
        late = EventFactory(rid).metrics(packed_series(
            "loss", [-1.0, -2.0], steps=[150, 50],
            times_us=[base - 10 * DAY_US + 50_500_000, base - 20 * DAY_US + 50_500_000]))
        await store_events(dsn, [late])
        await store_events(dsn, [late, *events])  # replayed with everything: stored once
        whole, _, exact = await reads()
        loss = whole["metrics"]["loss"]
        expected = [float(i) * 0.5 for i in range(300)]
        expected.insert(51, -2.0)
        expected.insert(152, -1.0)
        assert loss == expected
        assert [p["step"] for p in exact["points"]] == sorted(p["step"] for p in exact["points"])
        (n,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream.metric_points")
        assert n["n"] == 302
        # The policy recompresses what the late points left partly uncompressed.
        assert await partly_compressed_chunks(dsn) >= 1
        await execute(dsn, f"CALL run_job({job})")
        assert await chunk_states(dsn) == ["compressed", "compressed", "partial"]
        assert (await reads())[0]["metrics"]["loss"] == expected


async def test_the_hourly_aggregate_holds_the_right_sums_after_a_refresh(ts_dsn: str) -> None:
    dsn = ts_dsn
    await pause_policies(dsn)
    rid = run_id()
    f = EventFactory(rid)
    base = now_us() - 5 * HOUR_US
    base -= base % HOUR_US
    events = [f.metrics(packed_series("acc", [float(h)] * (10 + h),
                                      steps=range(h * 100, h * 100 + 10 + h),
                                      times_us=[base - h * HOUR_US + i for i in range(10 + h)]))
              for h in range(5)]
    await store_events(dsn, events)
    job = await job_id(dsn, "policy_refresh_continuous_aggregate")
    # Two scheduled runs: with TimescaleDB 2.22.1 one run of the policy materialized 4 of
    # these 5 hours (it refreshes its window in batches), the next one the last.
    for _ in range(2):
        await execute(dsn, f"CALL run_job({job})")
    got = await fetch(dsn, "SELECT extract(epoch FROM bucket)::bigint AS b, points, step_min, "
                           "step_max FROM runstream_data.metric_series_hourly "
                           "WHERE run_id = $1 ORDER BY bucket", rid)
    want = [{"b": (base - h * HOUR_US) // 1_000_000, "points": 10 + h, "step_min": h * 100,
             "step_max": h * 100 + 9 + h} for h in reversed(range(5))]
    assert got == want


async def interrupt_a_conversion(dsn: str) -> None:
    """Start ``runstream migrate --to-timescaledb`` and kill its session once it waits for
    the extension's job table — after the copy, to add the compression policy — which the
    test holds locked meanwhile."""
    holder = await asyncpg.connect(dsn)
    plain = await holder.fetchval("SELECT 'runstream_data.metric_chunks'::regclass::oid")
    proc: asyncio.subprocess.Process | None = None
    try:
        async with holder.transaction():
            await holder.execute(
                "LOCK TABLE _timescaledb_config.bgw_job IN SHARE ROW EXCLUSIVE MODE")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ingest.cli", "migrate", "--to-timescaledb",
                env=cli_env(dsn), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            waiting: list[int] = []

            async def blocked() -> bool:
                waiting[:] = [r["pid"] for r in await fetch(dsn, """
                    SELECT l.pid FROM pg_locks l
                    WHERE NOT l.granted
                      AND l.relation = '_timescaledb_config.bgw_job'::regclass""")]
                return bool(waiting)

            await wait_for(blocked, timeout_s=120, what="the conversion to reach the policy")
            # By then it has renamed (and copied and dropped) the plain table.
            held = await fetch(dsn, "SELECT mode FROM pg_locks WHERE pid = $1 AND granted "
                                    "AND relation = $2", waiting[0], plain)
            assert "AccessExclusiveLock" in {r["mode"] for r in held}
            await execute(dsn, "SELECT pg_terminate_backend($1)", waiting[0])
            _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
            assert proc.returncode != 0, err
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await holder.close()


async def test_migrate_keeps_a_plain_database_plain_until_told_then_converts_it(
    db_factory: DbFactory,
) -> None:
    dsn = await db_factory()
    await migrate(dsn)
    rid = run_id()
    events = old_and_new_points(rid, now_us())
    await store_events(dsn, events[:2])
    if not await enable_timescaledb(dsn):
        pytest.skip("TimescaleDB is not available on this PostgreSQL")
    storage = await storage_of(dsn)
    assert (storage.tables, storage.mode, storage.backend) == ("partitions", "postgresql",
                                                               "partitioned")
    result = runstream("migrate", env=cli_env(dsn))
    assert result.returncode == 0, result.stderr
    assert "runstream migrate --to-timescaledb" in result.stderr
    assert (await storage_of(dsn)).tables == "partitions"
    status = json.loads(runstream("status", "--json", env=cli_env(dsn)).stdout)["postgres"]
    assert status["mode"] == "postgresql"
    assert status["tables"] == "partitions"
    assert "TimescaleDB" in (status["mismatch"] or "")
    points = "SELECT run_id, name, step, value, time FROM runstream.metric_points ORDER BY step"
    before = await fetch(dsn, points)

    # Interrupted after copying the chunks (its session killed while it waits to add the
    # compression policy, held up by the test): nothing changed; it is simply run again.
    await interrupt_a_conversion(dsn)
    assert (await storage_of(dsn)).tables == "partitions"
    assert await fetch(dsn, points) == before

    result = runstream("migrate", "--to-timescaledb", env=cli_env(dsn))
    assert result.returncode == 0, result.stderr
    assert "converted metric chunks to a TimescaleDB hypertable (2 rows moved" in result.stdout
    storage = await storage_of(dsn)
    assert (storage.tables, storage.mode, storage.backend) == ("hypertable", "timescaledb",
                                                               "timescaledb")
    assert {j.kind for j in storage.jobs} >= {"compression", "aggregate_refresh"}
    assert await chunk_states(dsn) == ["compressed"]  # no first compression left to make
    (config,) = await fetch(dsn, "SELECT config FROM timescaledb_information.jobs "
                                 "WHERE proc_name = 'policy_compression'")
    assert json.loads(config["config"])["reindex"] is False
    assert await fetch(dsn, points) == before
    await store_events(dsn, events)  # the worker writes on; the first two are duplicates
    assert len(await fetch(dsn, points)) == 300
    again = runstream("migrate", "--to-timescaledb", env=cli_env(dsn))
    assert again.returncode == 0
    assert "already" in again.stdout


async def test_a_late_point_into_a_chunk_being_compressed_commits_while_the_pass_runs(
    ts_dsn: str, tmp_path: Path
) -> None:
    """Compression never blocks ingest (migration 0017): every chunk is compressed by the
    batch that creates it, so a pass of the policy only ever recompresses, and a batch
    with a late, out-of-order point for the very chunk the pass is in commits at once.
    The pass is held inside the oldest chunk for as long as the test needs: it has taken
    that chunk's lock and waits for the chunk's compressed part, which the test holds."""
    dsn = ts_dsn
    await pause_policies(dsn)
    rid = run_id()
    base = now_us()
    events = old_and_new_points(rid, base)
    await store_in_partial_chunks(dsn, events)
    assert await chunk_states(dsn) == ["partial"] * 3  # none left to compress a first time
    job = await job_id(dsn, "policy_compression")
    (config,) = await fetch(dsn, "SELECT config FROM timescaledb_information.jobs "
                                 "WHERE job_id = $1", job)
    assert json.loads(config["config"])["reindex"] is False  # no ShareLock after a pass
    await compress_after_one_day(dsn, job)
    oldest, oldest_part = (await chunks_and_parts(dsn))[0]

    holder = await asyncpg.connect(dsn)
    runner = await asyncpg.connect(dsn)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute(f"LOCK TABLE {oldest_part} IN SHARE UPDATE EXCLUSIVE MODE")
        runner_pid = await runner.fetchval("SELECT pg_backend_pid()")
        compression = asyncio.create_task(runner.execute(f"CALL run_job({job})"))

        async def inside_the_oldest_chunk() -> bool:
            locks = await relation_locks(dsn, runner_pid)
            return ((oldest, "ShareUpdateExclusiveLock", True) in locks
                    and (oldest_part, "ShareUpdateExclusiveLock", False) in locks)

        await wait_for(inside_the_oldest_chunk, timeout_s=120,
                       what="the compression pass inside the oldest chunk")
        # Late points for that chunk, out of order: step 60 before step 10, each half a
        # second after the point already at its step.
        late = EventFactory(rid).metrics(packed_series(
            "loss", [-1.0, -2.0], steps=[60, 10],
            times_us=[base - 20 * DAY_US + 60_500_000, base - 20 * DAY_US + 10_500_000]))
        try:  # a guard against hanging, not a measure of speed: the pass cannot move on
            await asyncio.wait_for(store_events(dsn, [late]), timeout=120)
        except TimeoutError:
            pytest.fail("the batch waited for the compression of its chunk")
        # Committed while the pass is still in the chunk, and readable at once.
        assert not compression.done()
        assert await inside_the_oldest_chunk()
        (n,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream.metric_points "
                                "WHERE run_id = $1 AND value < 0", rid)
        assert n["n"] == 2
        await hold.rollback()
        await compression
    finally:
        await holder.close()
        await runner.close()
    assert (await chunk_states(dsn))[1:] == ["compressed", "partial"]

    expected = [float(i) * 0.5 for i in range(300)]
    expected.insert(61, -1.0)
    expected.insert(11, -2.0)
    async with read_api(dsn, tmp_path / "blobs") as api, aiohttp.ClientSession() as http:
        whole = await get_json(http, f"{api.url}/v1/runs/{rid}/metrics")
        assert whole["metrics"]["loss"] == expected
        await store_events(dsn, [late, *events])  # replayed with everything: stored once
        await execute(dsn, f"CALL run_job({job})")
        assert await chunk_states(dsn) == ["compressed", "compressed", "partial"]
        whole = await get_json(http, f"{api.url}/v1/runs/{rid}/metrics")
        assert whole["metrics"]["loss"] == expected
    (n,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream.metric_points")
    assert n["n"] == 302
