"""TimescaleDB maintenance health in the API: the ``maintenance`` check of ``/readyz``
(degraded, never down) and the ``runstream_maintenance_*`` gauges of ``/metrics``.

The API exports them, not the workers (N workers would report the same numbers N times),
read from the database (``ingest/db/maintenance.py``) at most every ``min_interval_s``.
Per job kind (``compression``, ``aggregate_refresh``, ``job_history_retention``…; one job
per kind in Runstream's schema, the worst when several):

- ``runstream_maintenance_last_success_age_seconds``: since it last succeeded, run by the
  extension's scheduler or by Runstream (``+Inf``: never);
- ``runstream_maintenance_failures{runner="scheduler"|"runstream"}``: failed runs since
  the last success, by the scheduler / in a row by Runstream;
- ``runstream_maintenance_schedule_seconds``: the job's schedule interval;
- ``runstream_maintenance_run_by_runstream``: 1 while the scheduler cannot run it and
  Runstream's workers do.

Nothing is exported on plain PostgreSQL (no jobs). The alert rules using them are in
``deploy/prometheus/runstream-alerts.yml``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

from prometheus_client import CollectorRegistry, Gauge

from ingest.db.maintenance import DEFAULT_MIN_FAILURES, Storage, read_storage
from ingest.db.reads import ReadStore

__all__ = ["MaintenanceHealth"]

logger = logging.getLogger(__name__)


class MaintenanceHealth:
    def __init__(self, *, reads: ReadStore, registry: CollectorRegistry,
                 min_interval_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self._reads = reads
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._read_at: float | None = None
        self._storage: Storage | None = None
        self._lock = asyncio.Lock()
        self.last_success_age = Gauge(
            "runstream_maintenance_last_success_age_seconds",
            "Seconds since a TimescaleDB maintenance job of this kind last succeeded, run by "
            "the extension's scheduler or by Runstream's workers (+Inf: never).",
            ["kind"], registry=registry)
        self.failures = Gauge(
            "runstream_maintenance_failures",
            "Failed runs of a TimescaleDB maintenance job of this kind since its last "
            "success: by the extension's scheduler (runner=scheduler), in a row by "
            "Runstream's workers (runner=runstream).",
            ["kind", "runner"], registry=registry)
        self.schedule = Gauge(
            "runstream_maintenance_schedule_seconds",
            "The schedule interval of the TimescaleDB maintenance job of this kind.",
            ["kind"], registry=registry)
        self.run_by_runstream = Gauge(
            "runstream_maintenance_run_by_runstream",
            "1 while the extension's scheduler cannot run this kind of job and Runstream's "
            "workers run it themselves.",
            ["kind"], registry=registry)

    async def storage(self) -> Storage | None:
        """The storage and its jobs, re-read at most every ``min_interval_s``; None when
        the database cannot be read (the ``database`` check reports that)."""
        async with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self._min_interval_s:
                return self._storage
            try:
                async with asyncio.timeout(self._timeout_s):
                    async with self._reads.pool.acquire() as conn:
                        storage = await read_storage(conn)
            except Exception:
                logger.warning("TimescaleDB maintenance health not read", exc_info=True)
                self._read_at, self._storage = None, None
                return None
            self._read_at, self._storage = now, storage
            self._set(storage)
            return storage

    async def refresh(self) -> None:
        """Before a scrape of ``/metrics``."""
        await self.storage()

    async def degraded(self) -> list[str] | None:
        """``/readyz``: what is degraded (empty: nothing), None when unknown."""
        storage = await self.storage()
        return None if storage is None else storage.degraded()

    def _set(self, storage: Storage) -> None:
        ages: dict[str, float] = {}
        failures: dict[tuple[str, str], float] = defaultdict(float)
        schedules: dict[str, float] = {}
        taken: dict[str, float] = defaultdict(float)
        for job in storage.jobs:
            age = job.last_success_age_s
            age_value = math.inf if age is None else age
            ages[job.kind] = max(ages.get(job.kind, 0.0), age_value)
            scheduler = failures[(job.kind, "scheduler")]
            failures[(job.kind, "scheduler")] = max(scheduler, job.scheduler_failures)
            ours = failures[(job.kind, "runstream")]
            failures[(job.kind, "runstream")] = max(ours, job.runstream_failures)
            schedules[job.kind] = max(schedules.get(job.kind, 0.0), job.schedule_s)
            if job.scheduler_fails(DEFAULT_MIN_FAILURES):
                taken[job.kind] = 1.0
        for gauge in (self.last_success_age, self.failures, self.schedule, self.run_by_runstream):
            gauge.clear()
        for kind, age_value in ages.items():
            self.last_success_age.labels(kind=kind).set(age_value)
            self.schedule.labels(kind=kind).set(schedules[kind])
            self.run_by_runstream.labels(kind=kind).set(taken[kind])
        for (kind, runner), count in failures.items():
            self.failures.labels(kind=kind, runner=runner).set(count)
