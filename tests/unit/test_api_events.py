"""Live updates without I/O: change-notice payloads, event ids, event data."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from ingest.api.live.cursors import StreamPosition, parse_event_id
from ingest.api.live.streams import point_events
from ingest.db.notices import (
    MAX_NOTICES,
    MAX_PAYLOAD_BYTES,
    ChangeNotice,
    change_payloads,
    parse_notice,
)


def test_small_batch_is_one_notice_naming_runs_and_targets() -> None:
    (payload,) = change_payloads(["b", "a", "a"], ["gpu"])
    assert json.loads(payload) == {"targets": ["gpu"], "runs": ["a", "b"]}
    assert parse_notice(payload) == ChangeNotice(runs=frozenset("ab"), targets=frozenset({"gpu"}))


def test_many_runs_are_split_under_the_payload_limit_and_none_is_lost() -> None:
    runs = [f"experiment-{i}_1733000000_{i:08x}" for i in range(600)]
    payloads = change_payloads(runs, ["cpu", "gpu"])
    assert 1 < len(payloads) <= MAX_NOTICES
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    notices = [parse_notice(p) for p in payloads]
    assert set().union(*(n.runs for n in notices)) == set(runs)
    assert set().union(*(n.targets for n in notices)) == {"cpu", "gpu"}


def test_non_ascii_ids_count_in_bytes() -> None:
    runs = [f"эксперимент-{i}" * 8 for i in range(300)]
    payloads = change_payloads(runs, [])
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert set().union(*(parse_notice(p).runs for p in payloads)) == set(runs)


def test_too_many_runs_fall_back_to_one_all_notice() -> None:
    payloads = change_payloads([f"run-{i:06d}-{'x' * 200}" for i in range(5000)], [])
    assert payloads == ['{"all": true}']
    assert parse_notice(payloads[0]).all


@pytest.mark.parametrize("payload", ["", "not json", "[]", '{"runs": [1]}', '{"all": true}'])
def test_unreadable_notices_mean_everything(payload: str) -> None:
    assert parse_notice(payload).all


def test_event_ids_round_trip() -> None:
    t = datetime(2026, 11, 28, 4, 21, 33, 511565, tzinfo=UTC)
    points, logs = StreamPosition(t=t, done=12), StreamPosition.after(t)
    event_id = f"{points.token()}_{logs.token()}"
    assert event_id == "1795839693511565+12_1795839693511565"
    again_points, again_logs = parse_event_id(event_id)
    assert (again_points.t, again_points.done, again_points.skip) == (t, 12, 12)
    assert (again_logs.t, again_logs.done) == (t, None)


@pytest.mark.parametrize(
    "bad", ["", "12", "a_b", "1+x_2", "-5_0", "1_2_3", "1+-1_0", "\u0661_\u0662"]
)
def test_malformed_event_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        parse_event_id(bad)


def test_resuming_mid_transaction_skips_what_was_delivered() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    position = StreamPosition.from_token("1767225600000000+5")
    assert position.t == t
    assert list(position.take(t, ("p", 0, 0), 3)) == []  # items 0..2 were delivered
    assert list(position.take(t, ("p", 1, 0), 4)) == [2, 3]  # items 3, 4 were too
    later = datetime(2026, 1, 2, tzinfo=UTC)
    assert list(position.take(later, ("p", 2, 0), 2)) == [0, 1]
    assert position.done == 0  # a new transaction counts from zero


def test_point_data_keeps_types_and_spells_non_finite_numbers() -> None:
    row = {
        "name": "m", "rank": 2, "steps": [0, 1, 2, 3, 4, 5, 6],
        "values": [1.5, 3.0, 1.0, math.nan, math.inf, -math.inf, math.nan],
        "times": [0] * 7, "kinds": b"fibsfff", "texts": [None, None, None, "hi", None, None, None],
    }  # fmt: skip
    values = [p["value"] for p in point_events(row, range(7))]
    assert values == [1.5, 3, True, "hi", "Infinity", "-Infinity", "NaN"]
    assert type(values[1]) is int
    first = next(point_events(row, range(1)))
    assert first == {"name": "m", "step": 0, "value": 1.5, "rank": 2,
                     "time": "1970-01-01T00:00:00.000000+00:00"}
