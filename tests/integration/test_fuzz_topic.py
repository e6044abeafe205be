"""Arbitrary bytes on the events topic never crash a worker: they go to the dead-letter
topic, once each, and everything valid around them is stored once.

One in-process ingest worker (``run_worker``, as ``runstream ingest`` runs it) consumes a
fresh topic while the test produces, in a seeded random order, SDK-shaped events of every
payload kind (some with legal but extreme values, some sent twice, some with no key or
odd keys) mixed with garbage: random bytes, empty and null values, unknown schema ids,
truncated, padded and bit-flipped Avro, an out-of-range enum, random Avro behind a valid
header, and well-formed Avro carrying values the contract forbids (negative seq, ranks
beyond Avro ``int``, timestamps outside years 1..9999, NaN bits as times, unsafe paths, …).
Then a second wave of valid events proves the worker is still consuming.

Counted exactly: the set of stored event ids, events per producer, metric points, the
DLQ records (one per garbage message, matched by source partition and offset, with the
expected reason, the original key and value), the dead_letters table, the worker's
counters, and the stored offsets, which must equal each partition's end offset.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from ingest.bench.events import EventFactory, packed_series
from ingest.errors import InvalidEventError
from ingest.settings import Secret
from ingest.stack.kafka import topic_ends
from ingest.worker.decode import MAX_TIME_US, MIN_TIME_US, decode_event
from ingest.worker.service import run_worker
from schemas.codec import Codec
from tests.helpers import StackInfo, TopicFactory, unique
from tests.integration.helpers import NewDb, fetch, stored_offsets_reach, wait_for
from tests.reliability import BAD_INPUT, Reliability, storage_backend

pytestmark = pytest.mark.integration

CODEC = Codec()
SEED = 1128
HEADER = struct.Struct(">bI")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    what: str
    #: "ok" (to be stored), "duplicate" (an event sent before) or the expected DLQ reason
    expect: str
    event_id: str | None = None
    points: int = 0
    partition: int = -1
    offset: int = -1


def outcome(value: bytes | None) -> str:
    """What the worker's decode stage makes of a value: "ok" or the dead-letter reason."""
    try:
        decode_event(CODEC, value)
    except InvalidEventError as exc:
        return exc.reason
    return "ok"


def good(event: dict[str, Any], what: str, key: bytes | None = None) -> Message:
    value = CODEC.encode(event)
    assert outcome(value) == "ok", what
    payload = event["payload"]
    points = (
        sum(len(s["steps"]) // 8 for s in payload[1]["series"])
        if (payload[0] == "MetricBatch")
        else 0
    )
    return Message(
        event["run_id"].encode() if key is None else key,
        value,
        what,
        "ok",
        event["event_id"],
        points,
    )


def bad(value: bytes | None, what: str, reason: str, key: bytes | None = b"poison") -> Message:
    assert reason != "ok", what
    assert outcome(value) == reason, what
    return Message(key, value, what, reason)


def sdk_events(f: EventFactory, t0: int) -> list[dict[str, Any]]:
    """One run's worth of what the SDK sends, every payload kind."""
    return [
        f.lifecycle(
            "Running", display_name="fuzz ✓", compute_target="cpu", properties={"k": "v"}, ts_us=t0
        ),
        f.metrics(
            packed_series(
                "loss",
                [0.5, math.nan, math.inf, -math.inf, 7, True, "warm"],
                steps=[0, 1, 2, 3, 4, 5, 6],
            ),
            ts_us=t0 + 1,
        ),
        f.list_value("accuracies", [0.6, 2, False, "n/a", math.nan], ts_us=t0 + 2),
        f.row("Y over X", {"x": 1, "y": 0.4}, ts_us=t0 + 3),
        f.table("Sine", {"angle": [0.0, 1.0], "sine": [0.0, 0.84]}, ts_us=t0 + 4),
        f.tag("selected", "yes", ts_us=t0 + 5),
        f.artifact("outputs/model.pkl", "ab" * 32, 1234, ts_us=t0 + 6),
        f.log_lines("stdout", ["epoch 1", "épöch 2 \x00"], ts_us=t0 + 7),
        f.heartbeat(dropped_events=1, ts_us=t0 + 8),
        f.lifecycle("Completed", ts_us=t0 + 9),
    ]


def extreme_but_legal(rng: random.Random, t0: int) -> list[Message]:
    f = EventFactory(f"fuzz_ÿ_{rng.getrandbits(32):08x}", experiment="ë" * 256, rank=2**31 - 1)
    edge_steps = [INT64_MIN, -1, 0, INT64_MAX]
    return [
        good(
            f.metrics(
                packed_series(
                    "😀" * 256,
                    [0.0, -0.0, 5e-324, 1.7976931348623157e308],
                    steps=edge_steps,
                    times_us=[MIN_TIME_US, 0, t0, MAX_TIME_US],
                )
            ),
            "1024-byte series name, int64 steps, times at years 1 and 9999",
        ),
        good(f.metrics(ts_us=MIN_TIME_US), "empty metric batch at year 1"),
        good(f.metrics(packed_series("empty", []), ts_us=MAX_TIME_US), "empty series, year 9999"),
        good(f.heartbeat(dropped_events=INT64_MAX, seq=INT64_MAX), "int64 max seq and drops"),
        good(f.tag("k" * 1024, "v" * 8192), "longest tag key and value"),
        good(f.lifecycle("Queued", properties={"": "", "\x00": "\x00"}), "odd properties"),
    ]


def garbage(rng: random.Random, f: EventFactory, t0: int) -> list[Message]:
    template = CODEC.encode(f.metrics(packed_series("m", [1.0, 2.0])))
    body = template[HEADER.size :]
    out = [
        bad(b"", "empty value", "empty"),
        bad(None, "null value (tombstone)", "empty", key=f.run_id.encode()),
        bad(b"\x00\x00\x00", "shorter than the header", "empty"),
        bad(HEADER.pack(1, CODEC.schema_id) + body, "magic byte 1", "bad_magic"),
        bad(HEADER.pack(0, 999) + body, "schema id 999", "unknown_schema_id"),
        bad(HEADER.pack(0, 0) + body, "schema id 0", "unknown_schema_id"),
        bad(HEADER.pack(-1, 2**32 - 1) + body, "all-ones header", "bad_magic"),
        bad(template + b"\x00", "one trailing byte", "bad_avro"),
        bad(template + rng.randbytes(64), "trailing junk", "bad_avro"),
        bad(HEADER.pack(0, CODEC.schema_id), "header only", "bad_avro"),
    ]
    out += [
        bad(template[:cut], f"truncated at {cut}", "bad_avro")
        for cut in sorted(rng.sample(range(HEADER.size + 1, len(template)), 6))
    ]
    lifecycle = CODEC.encode(f.lifecycle("NotStarted"))  # status is the enum index 0 …
    at = lifecycle.rindex(b"\x0c\x00") + 1  # … right after the union branch 6 (zigzag 0x0c)
    out.append(
        bad(lifecycle[:at] + b"\x12" + lifecycle[at + 1 :], "status enum index 9", "bad_avro")
    )

    flipped = 0
    while flipped < 8:  # bit flips that decode rejects (others may still be valid events)
        buf = bytearray(CODEC.encode(f.metrics(packed_series("m", [float(flipped)]))))
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        if (reason := outcome(bytes(buf))) != "ok":
            out.append(bad(bytes(buf), f"bit flip #{flipped}", reason))
            flipped += 1
    for n in (1, 4, 5, 6, 17, 64, 300, 5000):
        for what, data in (
            (f"{n} random bytes", rng.randbytes(n)),
            (
                f"valid header + {n} random bytes",
                HEADER.pack(0, CODEC.schema_id) + rng.randbytes(n),
            ),
        ):
            out.append(bad(data, what, outcome(data)))

    def invalid(event: dict[str, Any], what: str) -> Message:
        return bad(CODEC.encode(event), what, "invalid_value", key=event["run_id"].encode())

    def series(**changes: Any) -> dict[str, Any]:
        s = packed_series("m", [1.0, 2.0])
        s.update(changes)
        return f.metrics(s, ts_us=t0)

    nan_time = struct.pack("<d", math.nan)
    hb = f.heartbeat(ts_us=t0)
    out += [
        invalid({**hb, "seq": -1}, "negative seq"),
        invalid({**hb, "rank": -1}, "negative rank"),
        invalid({**f.metrics(packed_series("m", [1.0])), "rank": 2**31}, "rank 2^31, points"),
        invalid({**f.metrics(packed_series("m", [1.0])), "rank": 2**62}, "rank 2^62, points"),
        invalid({**hb, "rank": 2**31}, "rank 2^31, heartbeat"),
        invalid({**hb, "ts": INT64_MIN}, "ts int64 min"),
        invalid({**hb, "ts": INT64_MAX}, "ts int64 max"),
        invalid({**hb, "ts": MAX_TIME_US + 1}, "ts in year 10000"),
        invalid(series(times=nan_time * 2), "NaN bits as point times"),
        invalid(series(values=b"\x00" * 8), "2 steps, 1 value"),
        invalid(series(kinds=b"fx"), "kind x"),
        invalid(series(texts=["orphan"]), "texts without kinds"),
        invalid(series(kinds=b"ss", texts=["one"]), "2 string points, 1 text"),
        invalid(series(name=""), "empty series name"),
        invalid(f.table("t", {"a": [1, 2], "b": [1]}), "unequal table columns"),
        invalid(f.row("r", {}), "row without cells"),
        invalid(f.artifact("../../etc/passwd", "a" * 64, 1), "artifact path escapes"),
        invalid(f.artifact("x", "A" * 64, 1), "uppercase sha256"),
        invalid(f.artifact("x", "a" * 64, -1), "negative size"),
        invalid(f.heartbeat(dropped_events=-1), "negative drops"),
        invalid({**hb, "run_id": ""}, "empty run id"),
        invalid({**hb, "run_id": "a\x00b"}, "NUL in run id"),
        invalid({**hb, "experiment": "e" * 2000}, "2000-character experiment"),
        invalid({**hb, "event_id": "not-a-uuid"}, "event id not a uuid"),
        invalid({**hb, "producer_id": "p" * 65}, "65-character producer id"),
        invalid(f.tag("k", "v" * 8193), "tag value over 8 KiB"),
        invalid(f.lifecycle("Running", parent_run_id=f.run_id), "its own parent"),
    ]
    return out


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send in order and record where each message landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=m.key,
                value=m.value,
                headers=[("fuzz", m.what.encode())] if i % 3 else [],
            )
            for i, m in enumerate(messages)
        ]
        for m, meta in zip(messages, await asyncio.gather(*futures), strict=True):
            m.partition, m.offset = meta.partition, meta.offset
    finally:
        await producer.stop()


@asynccontextmanager
async def running_worker(
    stack: StackInfo, topic: str, dsn: str, group: str, registry: CollectorRegistry
) -> AsyncIterator[asyncio.Task[int]]:
    settings = replace(stack.settings, topic=topic, db_dsn=Secret(dsn))
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            settings,
            dsn=dsn,
            group_id=group,
            stop=stop,
            registry=registry,
            metrics_port=None,
            handle_signals=False,
            max_batch_messages=25,
        )
    )  # many small transactions
    try:
        yield task
    finally:
        stop.set()
        exit_code = await asyncio.wait_for(task, 60)
    assert exit_code == 0


def stored_or_exited(
    task: asyncio.Task[int], dsn: str, topic: str, group: str, ends: dict[int, int]
) -> Callable[[], Awaitable[bool]]:
    """``stored_offsets_reach``, failing at once if the worker has exited."""
    stored = stored_offsets_reach(dsn, topic, group, ends)

    async def check() -> bool:
        if task.done():
            pytest.fail(f"the worker exited with {task.result()} (see the captured log)")
        return await stored()

    return check


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    ends = await topic_ends(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        while len(out) < sum(ends.values()):
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, f"{topic}: read {len(out)} of {sum(ends.values())} records"
            for records in batch.values():
                out += records
        return out
    finally:
        await consumer.stop()


async def test_garbage_on_the_events_topic_goes_to_the_dlq_and_never_stops_the_worker(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb, reliability: Reliability
) -> None:
    topic, dsn = await topic_factory(partitions=3), await new_db()
    rng = random.Random(SEED)
    t0 = 1_800_000_000_000_000
    runs = [
        EventFactory(f"fuzz_1800000000_{rng.getrandbits(32):08x}", rank=r % 2) for r in range(4)
    ]
    valid = [good(e, f"{f.run_id} {e['payload'][0]}") for f in runs[:3] for e in sdk_events(f, t0)]
    valid += extreme_but_legal(rng, t0)
    poison = garbage(rng, runs[3], t0)
    for messages in (valid, poison):
        for m, key in zip(
            rng.sample(messages, 4), [None, b"", rng.randbytes(16), b"k" * 4096], strict=True
        ):
            m.key = key  # no key, empty key, binary key, a 4 KiB key
    duplicates = [replace(m, expect="duplicate") for m in rng.sample(valid, 5)]
    first_wave = valid + duplicates + poison
    rng.shuffle(first_wave)
    second_wave = [
        good(e, f"after the garbage: {e['payload'][0]}")
        for e in sdk_events(EventFactory(f"fuzz_1800000001_{SEED:08x}"), t0)
    ]

    registry = CollectorRegistry()
    group = unique("fuzz-")
    async with running_worker(stack, topic, dsn, group, registry) as task:
        await produce(stack.kafka_bootstrap, topic, first_wave)
        ends = await topic_ends(stack.kafka_bootstrap, topic)
        await wait_for(stored_or_exited(task, dsn, topic, group, ends), what="the first wave")
        assert not task.done(), "the worker stopped on garbage"
        await produce(stack.kafka_bootstrap, topic, second_wave)
        ends = await topic_ends(stack.kafka_bootstrap, topic)
        await wait_for(stored_or_exited(task, dsn, topic, group, ends), what="the second wave")
        assert not task.done(), "the worker stopped after the garbage"
    sent = first_wave + second_wave
    stored = [m for m in sent if m.expect == "ok"]
    dead = {(m.partition, m.offset): m for m in sent if m.expect not in ("ok", "duplicate")}
    assert (len(sent), len(stored), len(duplicates), len(dead)) == (
        len(valid) + len(duplicates) + len(poison) + len(second_wave),
        len(valid) + len(second_wave),
        5,
        len(poison),
    )

    ids = await fetch(dsn, "SELECT event_id::text AS id FROM runstream_data.dedup_keys")
    records = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
    lettered = Counter(
        (int(h["source_partition"]), int(h["source_offset"]))
        for h in ({k: v.decode() for k, v in r.headers} for r in records)
    )
    stored_ids = {r["id"] for r in ids}
    reliability.record(
        guarantee="arbitrary bytes on the events topic go to the dead-letter topic; the worker "
        "never stops and every valid neighbour is stored once",
        faults=f"{len(poison)} garbage messages (random bytes, bad magic, unknown schema id, "
        f"truncated/bit-flipped Avro, absurd values, odd keys) among {len(valid)} valid events "
        f"and {len(duplicates)} duplicates",
        events=len(sent),
        points=sum(m.points for m in stored),
        lost=sum(str(m.event_id) not in stored_ids for m in stored)
        + sum(k not in lettered for k in dead),
        doubled=sum(n - 1 for n in lettered.values()),
        storage=await storage_backend(dsn),
        section=BAD_INPUT,
        notes=f"{len(lettered)} dead-lettered with reasons "
        f"{dict(Counter(m.expect for m in dead.values()))}; worker alive throughout",
    )

    # Offsets: stored with the data, exactly at the end of every partition.
    assert sum(ends.values()) == len(sent)
    offsets = await fetch(
        dsn,
        "SELECT partition, next_offset FROM runstream_data.consumer_offsets WHERE group_id = $1",
        group,
    )
    assert {r["partition"]: r["next_offset"] for r in offsets} == ends
    # Kafka's copy (for lag tools) is brought up to date when the worker stops.
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == ends

    # Every valid event stored exactly once.
    assert sorted(r["id"] for r in ids) == sorted(str(m.event_id) for m in stored)
    (counts,) = await fetch(
        dsn,
        "SELECT (SELECT sum(events) FROM runstream_data.producers) AS events, "
        "(SELECT count(*) FROM runstream.metric_points) AS points",
    )
    assert (counts["events"], counts["points"]) == (len(stored), sum(m.points for m in stored))
    assert registry.get_sample_value("runstream_duplicates_dropped_total") == len(duplicates)
    assert registry.get_sample_value("runstream_events_consumed_total") == len(sent)

    # Every garbage message exactly once in the DLQ, with its reason, key and value.
    assert lettered == Counter(dead.keys())
    reasons: Counter[str] = Counter()
    for r in records:
        h = {k: v.decode() for k, v in r.headers}
        m = dead[(int(h["source_partition"]), int(h["source_offset"]))]
        assert (h["reason"], h["source_topic"], r.key, r.value) == (
            m.expect,
            topic,
            m.key,
            m.value,
        ), m.what
        reasons[h["reason"]] += 1
    assert reasons == Counter(m.expect for m in dead.values())
    for reason, n in reasons.items():
        assert registry.get_sample_value("runstream_dead_letters_total", {"reason": reason}) == n
    table = await fetch(dsn, 'SELECT partition, "offset", reason FROM runstream.dead_letters')
    assert sorted((r["partition"], r["offset"], r["reason"]) for r in table) == sorted(
        (p, o, m.expect) for (p, o), m in dead.items()
    )
