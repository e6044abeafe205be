"""metrics: the documented names exist in an injected registry, labels stay bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from ingest.api.routes.compute import QueueGauges
from ingest.db.queues import QueueState
from ingest.worker.metrics import IngestMetrics


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
    registry = CollectorRegistry()
    gauges = QueueGauges(registry)
    gauges.set([QueueState("a", 2, 1, 3, 1, 12.5, None, None, 0, 0, 0)])
    gauges.set([QueueState("b", 1, 0, 0, 0, None, None, None, 0, 0, 0)])
    text = generate_latest(registry).decode()
    assert 'compute_target="a"' not in text
    assert 'runstream_queue_runs{compute_target="b",state="queued"} 1.0' in text
