"""metrics: the documented names exist in an injected registry, labels stay bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ingest.worker.metrics import IngestMetrics
from ingest.worker.status import QueueState


def test_metric_names_and_labels() -> None:
    registry = CollectorRegistry()
    m = IngestMetrics(registry)
    m.events_consumed.inc(3)
    m.points_persisted.inc(10)
    m.duplicates_dropped.inc()
    m.dead_letters.labels(reason="bad_avro").inc()
    m.batch_seconds.observe(0.01)
    m.set_lag(2, 40)
    m.observe_log_to_commit(100.0, [99_500_000])
    text = m.render().decode()
    for name in ("runstream_events_consumed_total 3.0", "runstream_points_persisted_total 10.0",
                 "runstream_duplicates_dropped_total 1.0",
                 'runstream_dead_letters_total{reason="bad_avro"} 1.0',
                 "runstream_batch_seconds_count 1.0", 'runstream_consumer_lag{partition="2"} 40.0',
                 'runstream_log_to_commit_seconds_bucket{le="0.5"} 1.0'):
        assert name in text
    m.forget_partitions([2])
    assert "runstream_consumer_lag{" not in m.render().decode()


def test_queue_gauges_replace_stale_targets() -> None:
    m = IngestMetrics(CollectorRegistry())
    m.set_queue_state([QueueState("a", 2, 1, 3, 1, 12.5, None, None, None, 0, 0, 0)])
    m.set_queue_state([QueueState("b", 1, 0, 0, 0, None, None, None, None, 0, 0, 0)])
    text = m.render().decode()
    assert 'compute_target="a"' not in text
    assert 'runstream_queue_runs{compute_target="b",state="queued"} 1.0' in text
