"""The ingest worker process: components composed with one exit stack and one task group.

Start-up order: database pool → dead-letter producer → consumer (joins the group) →
metrics HTTP. Shutdown runs in reverse after the drain: SIGTERM (or ``stop``) ends the
fetch loop, the writer commits what is already queued, and all of that has one deadline
(``drain_timeout_s``); past it the in-flight transaction is cancelled (rolled back — the
next owner re-reads from the stored offsets). Then HTTP stops, the consumer leaves the
group, the producer flushes and the pool closes. A crashed loop cancels its siblings and
the worker exits non-zero.

Beside the two loops: partition upkeep of metric chunks and of dedup keys (hourly; the
latter drops the keys past the dedup horizon, migration 0011), the series tiler
(``tiler.py``: the read path's summaries of big series, kept current as points arrive, off
the commit path) and, on TimescaleDB, a look at the extension's background jobs every
minute: a job its scheduler cannot run is run by the workers themselves, one at a time,
on its own connection (``ingest/db/maintenance.py``; cancelled at shutdown). And runs whose
process went silent — killed without a word — are ended Failed after
``fail_after_no_heartbeat`` (``silence.py``).

``runstream ingest`` (ingest/cli/main.py) calls ``run_worker``; ``python -m
ingest.worker.service`` does the same from the environment alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from ingest.db.maintenance import MaintenanceRunner
from ingest.server import HttpServer
from ingest.settings import DEFAULT_GROUP_ID, DEFAULT_METRICS_PORT, Settings
from ingest.worker.consumer import DeadLetterProducer, IngestConsumer
from ingest.worker.metrics import IngestMetrics, metrics_app
from ingest.worker.silence import SilentRuns
from ingest.worker.store import Store
from ingest.worker.tiler import SeriesTiler

__all__ = ["run_worker"]

logger = logging.getLogger(__name__)

PARTITION_UPKEEP_INTERVAL_S = 3600.0
QUEUE_GAUGES_INTERVAL_S = 15.0
#: How often a worker looks at the TimescaleDB jobs (and runs those due that fail).
MAINTENANCE_INTERVAL_S = 60.0


async def _every(interval_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[object]],
                 what: str) -> None:
    while not stop.is_set():
        try:
            await job()
        except Exception:
            logger.exception("%s failed; trying again in %.0f s", what, interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run_worker(
    settings: Settings,
    *,
    dsn: str,
    group_id: str = DEFAULT_GROUP_ID,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    drain_timeout_s: float = 10.0,
    handle_signals: bool = True,
    max_batch_messages: int = 2000,
    max_queued_batches: int = 4,
) -> int:
    """Run one ingest worker until ``stop`` is set or SIGTERM/SIGINT; return the exit code.

    ``metrics_port=None`` serves no HTTP; ``0`` picks a free port. Migrations are not run
    here (``runstream migrate`` / ``ingest.worker.store.migrate``).
    """
    stop = stop or asyncio.Event()
    metrics = IngestMetrics(registry or CollectorRegistry())
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    crashed = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(Store(dsn=dsn))
            tiler = SeriesTiler(store)
            dlq = await stack.enter_async_context(DeadLetterProducer(
                bootstrap=settings.kafka_bootstrap, dlq_topic=settings.dlq_topic,
                source_topic=settings.topic, security=settings.kafka_security))
            worker = await stack.enter_async_context(IngestConsumer(
                bootstrap=settings.kafka_bootstrap, topic=settings.topic, group_id=group_id,
                store=store, dead_letters=dlq, metrics=metrics,
                max_batch_messages=max_batch_messages, max_queued_batches=max_queued_batches,
                security=settings.kafka_security, on_commit=tiler.note))
            if metrics_port is not None:
                await stack.enter_async_context(HttpServer(
                    metrics_app(metrics), host=metrics_host, port=metrics_port,
                    name="metrics", access_log=False))
            logger.info("ingest worker %s consuming %s", group_id, settings.topic)
            async with asyncio.TaskGroup() as tg:
                fetch = tg.create_task(worker.run_fetch(stop), name="fetch")
                write = tg.create_task(worker.run_write(), name="write")
                tg.create_task(_every(PARTITION_UPKEEP_INTERVAL_S, stop, store.ensure_partitions,
                                      "partition upkeep"), name="partitions")
                tg.create_task(_every(PARTITION_UPKEEP_INTERVAL_S, stop, store.maintain_dedup_keys,
                                      "dedup key upkeep"), name="dedup-keys")
                tg.create_task(tiler.run(stop), name="tiles")
                tg.create_task(SilentRuns(store, settings).run(stop), name="silent-runs")
                maintenance = tg.create_task(_every(
                    MAINTENANCE_INTERVAL_S, stop, MaintenanceRunner(dsn).tick,
                    "TimescaleDB maintenance"), name="maintenance")
                await stop.wait()
                maintenance.cancel()  # a compression pass may take minutes: not worth waiting
                logger.info("stopping: draining queued batches (deadline %.0f s)",
                            drain_timeout_s)
                try:
                    async with asyncio.timeout(drain_timeout_s):
                        await asyncio.wait({fetch, write})
                except TimeoutError:
                    logger.warning("drain deadline passed; abandoning the in-flight batch")
                    fetch.cancel()
                    write.cancel()
    except* Exception:
        logger.exception("ingest worker crashed")
        crashed = True
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    logger.info("ingest worker stopped")
    return 1 if crashed else 0
