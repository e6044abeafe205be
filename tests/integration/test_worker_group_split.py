"""Two ``runstream ingest`` processes in one consumer group split the topic's partitions
and, together, store every point exactly once (issue 12, capacity: adding workers is how
the pipeline scales, so they must share the work, not repeat or skip any of it).

Real broker, real database, two real worker processes started as an operator would. The
split is read from what each worker says it was assigned; the points are written to every
partition only once both hold their share, so each partition's points are stored by the
worker that holds it, and the assignment is checked unchanged at the end.
"""

from __future__ import annotations

import asyncio
import re

from aiokafka import AIOKafkaProducer

from ingest.bench.events import EventFactory, packed_series
from schemas.codec import Codec
from tests.helpers import StackInfo, TopicFactory, unique
from tests.integration.helpers import (
    NewDb,
    WorkerFactory,
    WorkerProcess,
    fetch,
    run_id,
    stored_offsets_reach,
    wait_for,
)

PARTITIONS = 6
RUNS = 12  # two per partition
BATCHES = 10
POINTS = 100  # per batch
ASSIGNED = re.compile(r"assigned \[([\d, ]*)\]")


def assignments(worker: WorkerProcess) -> list[set[int]]:
    """Every partition set the worker logged it was assigned, in order."""
    return [{int(p) for p in m.group(1).split(",") if p.strip()}
            for m in ASSIGNED.finditer(worker.output())]


def split(workers: list[WorkerProcess]) -> list[set[int]] | None:
    """Each worker's current partitions if together they are a split of the topic: every
    set non-empty, no partition in two, none left out; else None."""
    latest = [a[-1] if (a := assignments(w)) else set() for w in workers]
    union = set().union(*latest)
    if all(latest) and sum(map(len, latest)) == len(union) == PARTITIONS:
        return latest
    return None


async def test_two_workers_in_one_group_split_the_partitions_and_store_every_point_once(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb, worker_procs: WorkerFactory,
) -> None:
    topic, dsn = await topic_factory(partitions=PARTITIONS), await new_db()
    group = unique("split-")
    workers = [worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                                  group=group) for _ in range(2)]

    async def split_up() -> bool:
        assert all(w.proc.poll() is None for w in workers), [w.output() for w in workers]
        return split(workers) is not None

    await wait_for(split_up, timeout_s=60, what="two workers holding disjoint partitions")
    shares = split(workers)
    assert shares is not None
    rebalances = [len(assignments(w)) for w in workers]

    codec = Codec()
    factories = [EventFactory(run_id(), rank=0) for _ in range(RUNS)]
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, key=f.run_id.encode(), partition=i % PARTITIONS,
                value=codec.encode(f.metrics(packed_series(
                    "x", [float(b)] * POINTS, steps=range(b * POINTS, (b + 1) * POINTS)))))
            for b in range(BATCHES) for i, f in enumerate(factories)
        ]
        ends: dict[int, int] = {}
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    assert sorted(ends) == list(range(PARTITIONS))
    await wait_for(stored_offsets_reach(dsn, topic, group, ends), timeout_s=60,
                   what="the two workers storing every partition")

    # Still the same split: each partition's points were stored by the worker holding it.
    assert [len(assignments(w)) for w in workers] == rebalances, [w.output() for w in workers]
    assert split(workers) == shares
    (row,) = await fetch(
        dsn, "SELECT count(*) AS n, count(DISTINCT (run_id, step)) AS d, "
             "count(DISTINCT run_id) AS runs FROM runstream.metric_points")
    assert row["n"] == row["d"] == RUNS * BATCHES * POINTS
    assert row["runs"] == RUNS
    for worker in workers:
        assert worker.stop() == 0, worker.output()
    print(f"partitions per worker: {[sorted(s) for s in shares]}; assignments logged "
          f"{rebalances}; {row['n']:,} points stored once")
