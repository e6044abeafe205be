"""Call-site validation rules (the functions behind every Run method)."""

from __future__ import annotations

import io
import itertools
import math
import sys
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producer import Experiment
from producer._batch import event_dict
from producer._buffer import Stream
from producer._capture import MAX_LINE_CHARS
from producer._validate import (
    INT64_MAX,
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_STR,
    MAX_ARTIFACT_NAME_BYTES,
    MAX_COLUMNS,
    MAX_LIST_VALUES,
    MAX_NAME_CHARS,
    MAX_PROPERTIES,
    MAX_PROPERTY_VALUE_BYTES,
    MAX_RUN_EXPERIMENT_CHARS,
    MAX_TABLE_CELLS,
    MAX_TAG_VALUE_BYTES,
    cell,
    check_artifact_name,
    check_experiment_name,
    check_name,
    check_properties,
    check_step,
    check_tag_value,
    metric_value,
    row_cells,
    same_value,
    table_columns,
    tag_value,
    valid_text,
    values_list,
    wire_text,
)
from schemas.codec import DEFAULT_MAX_MESSAGE_BYTES, Codec
from tests.helpers import run_points
from tests.unit.producer_fakes import (
    UNREACHABLE_API,
    MemoryKafka,
    MemoryWorkspace,
    of_kind,
    options,
)


class Scalar0d:
    """Shaped like a numpy/torch scalar: only ``item()`` gives the Python value."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def item(self) -> Any:
        return self._value


class ManyItems:
    def item(self) -> Any:
        raise ValueError("can only convert an array of size 1 to a Python scalar")


@pytest.mark.parametrize("name", ["loss", "Y over X", "a" * MAX_NAME_CHARS, "métrica/ü"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", ValueError),
        ("a" * (MAX_NAME_CHARS + 1), ValueError),
        ("bad\x00name", ValueError),
        ("tab\tname", ValueError),
        (None, TypeError),
        (3, TypeError),
    ],
)
def test_bad_names(name: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_name(name)


@pytest.mark.parametrize("name", ["model.pkl", "outputs/model.pkl", "a/b/c d.txt", "ROC"])
def test_good_artifact_names(name: str) -> None:
    assert check_artifact_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../up", "a/../b", "a/./b", "./a", "a//b", "a/", "nul\x00", "win\\path"],
)
def test_bad_artifact_names(name: str) -> None:
    with pytest.raises(ValueError, match="artifact name"):
        check_artifact_name(name)


@pytest.mark.parametrize("name", ["diabetes", "exp_1", "a.b-c"])
def test_good_experiment_names(name: str) -> None:
    assert check_experiment_name(name) == name


@pytest.mark.parametrize("name", ["", "_lead", "has space", "x" * 256, "slash/y"])
def test_bad_experiment_names(name: str) -> None:
    with pytest.raises(ValueError, match="experiment name"):
        check_experiment_name(name)


@pytest.mark.parametrize(
    ("value", "kind", "number", "text"),
    [
        (1.5, KIND_FLOAT, 1.5, None),
        (7, KIND_INT, 7.0, None),
        (True, KIND_BOOL, 1.0, None),
        (False, KIND_BOOL, 0.0, None),
        ("hi", KIND_STR, math.nan, "hi"),
        (2**64, KIND_FLOAT, float(2**64), None),
        (10**400, KIND_FLOAT, math.inf, None),
        (-(10**400), KIND_FLOAT, -math.inf, None),
        (Fraction(1, 4), KIND_FLOAT, 0.25, None),
        (Scalar0d(3), KIND_INT, 3.0, None),
        (Scalar0d(0.5), KIND_FLOAT, 0.5, None),
        (Scalar0d(True), KIND_BOOL, 1.0, None),
    ],
)
def test_metric_values(value: Any, kind: int, number: float, text: str | None) -> None:
    got_kind, got_number, got_text = metric_value(value, 1 << 20)
    assert got_kind == kind
    assert got_text == text
    assert (math.isnan(got_number) and math.isnan(number)) or got_number == number


@pytest.mark.parametrize("value", [None, [1.0], {"a": 1}, b"bytes", ManyItems(), object()])
def test_unsupported_metric_values(value: Any) -> None:
    with pytest.raises(TypeError):
        metric_value(value, 1 << 20)


def test_oversized_text_point() -> None:
    with pytest.raises(ValueError, match="upload it as a file"):
        metric_value("x" * 5000, 4096)
    assert metric_value("x" * 1000, 4096)[2] == "x" * 1000


@pytest.mark.parametrize("step", [0, -5, 2**62, Scalar0d(3)])
def test_steps(step: Any) -> None:
    if isinstance(step, Scalar0d):
        with pytest.raises(TypeError):
            check_step(step)
    else:
        assert check_step(step) == step


@pytest.mark.parametrize(
    ("step", "error"), [(True, TypeError), (1.0, TypeError), (2**63, ValueError)]
)
def test_bad_steps(step: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_step(step)


def test_cells_keep_types_and_widen_huge_ints() -> None:
    assert [cell(v) for v in (True, 3, 2.5, "s")] == [True, 3, 2.5, "s"]
    assert cell(2**64) == float(2**64)
    assert values_list("xs", (1, 2.0, "three")) == [1, 2.0, "three"]


@pytest.mark.parametrize("values", ["abc", b"abc", {"a": 1}, 3])
def test_lists_must_be_iterables_of_scalars(values: Any) -> None:
    with pytest.raises(TypeError):
        values_list("xs", values)


def test_rows() -> None:
    assert row_cells("r", {"x": 1, "y": 0.4}) == [
        {"column": "x", "value": 1},
        {"column": "y", "value": 0.4},
    ]
    with pytest.raises(ValueError, match="at least one column"):
        row_cells("r", {})


def test_tables() -> None:
    assert table_columns("t", {"a": [1, 2], "b": ["x", "y"]}) == [
        {"name": "a", "values": [1, 2]},
        {"name": "b", "values": ["x", "y"]},
    ]
    with pytest.raises(ValueError, match="unequal length"):
        table_columns("t", {"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="no columns"):
        table_columns("t", {})
    with pytest.raises(TypeError):
        table_columns("t", [[1, 2]])


def test_tag_values_keep_their_type() -> None:
    assert check_tag_value(None) is None
    assert check_tag_value("yes") == "yes"
    for value in (0.5, 10, True, False, -(2**70)):
        assert same_value(check_tag_value(value), value)  # type: ignore[arg-type]
    assert same_value(check_tag_value(np.float64(0.5)), 0.5)  # type: ignore[arg-type]
    assert same_value(check_tag_value(np.int64(3)), 3)  # type: ignore[arg-type]
    assert same_value(check_tag_value(np.bool_(True)), True)  # type: ignore[arg-type]
    for bad in (["no"], {"a": 1}, object(), b"x"):
        with pytest.raises(TypeError, match="tag value must be a str, int, float or bool"):
            check_tag_value(bad)
    # Display names and descriptions stay text.
    assert tag_value("yes") == "yes"
    with pytest.raises(TypeError, match="must be a str"):
        tag_value(0.5)


def test_wire_text_is_pythons_str_with_a_type() -> None:
    assert wire_text("10") == ("10", "str")
    assert wire_text(10) == ("10", "int")
    assert wire_text(0.1) == ("0.1", "float")
    assert wire_text(1e20) == ("1e+20", "float")
    assert wire_text(True) == ("True", "bool")
    assert wire_text(False) == ("False", "bool")
    # What JSON numbers in the store cannot hold as given travels as text.
    assert wire_text(2**63) == (str(2**63), "str")
    assert wire_text(-(2**63)) == (str(-(2**63)), "int")
    assert wire_text(math.nan) == ("nan", "str")
    assert wire_text(-math.inf) == ("-inf", "str")
    assert not same_value(1, 1.0)
    assert not same_value(1, True)
    assert same_value(0.5, 0.5)


# ---- limits -------------------------------------------------------------------------------
# Each limit: at the limit passes, one past it raises a ValueError that names the limit and
# says what to do instead. Through a real ``Run`` (in-memory Kafka), a refused call
# enqueues nothing: the topic holds only what the good calls logged, seq stays gap-free.


def test_tag_values_up_to_8_kib_of_utf8() -> None:
    assert check_tag_value("v" * MAX_TAG_VALUE_BYTES) == "v" * MAX_TAG_VALUE_BYTES
    assert check_tag_value("€" * (MAX_TAG_VALUE_BYTES // 3)) == "€" * (MAX_TAG_VALUE_BYTES // 3)
    for over in ("v" * (MAX_TAG_VALUE_BYTES + 1), "€" * (MAX_TAG_VALUE_BYTES // 3 + 1)):
        with pytest.raises(ValueError, match=r"tag value is \d+ bytes.*8192-byte limit.*as a file"):
            check_tag_value(over)
    with pytest.raises(ValueError, match=r"tag value is an int of over 4300 digits"):
        check_tag_value(10**5000)


def test_properties_count_and_value_size() -> None:
    most = {f"p{i}": "v" * MAX_PROPERTY_VALUE_BYTES for i in range(MAX_PROPERTIES)}
    assert check_properties(most) == most
    with pytest.raises(ValueError, match=r"101 properties, over the 100 limit.*tags"):
        check_properties({**most, "one more": ""})
    with pytest.raises(ValueError, match=r"property 'p' is 8193 bytes.*8192-byte limit"):
        check_properties({"p": "v" * (MAX_PROPERTY_VALUE_BYTES + 1)})
    with pytest.raises(ValueError, match="property name"):
        check_properties({"": "v"})
    typed = check_properties({"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam"})
    assert typed == {"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam"}
    assert [type(v) for v in typed.values()] == [float, int, bool, str]
    with pytest.raises(TypeError, match="property 'p' must be a str, int, float or bool"):
        check_properties({"p": [1]})
    with pytest.raises(TypeError, match="properties must be a dict"):
        check_properties([("p", 1)])  # type: ignore[arg-type]


def test_list_length() -> None:
    assert len(values_list("l", [0.5] * MAX_LIST_VALUES)) == MAX_LIST_VALUES
    with pytest.raises(ValueError, match=r"65537 values, over the 65536 limit.*several calls"):
        values_list("l", [0.5] * (MAX_LIST_VALUES + 1))
    # An endless iterable is refused after limit + 1 items, not read forever.
    with pytest.raises(ValueError, match="over the 65536 limit"):
        values_list("l", itertools.count())


def test_row_cells_count() -> None:
    widest = {f"c{i}": i for i in range(MAX_COLUMNS)}
    assert len(row_cells("r", widest)) == MAX_COLUMNS
    with pytest.raises(ValueError, match=r"257 columns, over the 256 limit"):
        row_cells("r", {**widest, "extra": 1})


def test_table_columns_and_cells() -> None:
    square = {f"c{i}": [1.0] * (MAX_TABLE_CELLS // MAX_COLUMNS) for i in range(MAX_COLUMNS)}
    assert len(table_columns("t", square)) == MAX_COLUMNS
    assert len(table_columns("t", {"c": [1] * MAX_TABLE_CELLS})[0]["values"]) == MAX_TABLE_CELLS
    with pytest.raises(ValueError, match=r"257 columns, over the 256 limit"):
        table_columns("t", {**square, "extra": [1.0] * 256})
    for too_many in (
        {"c": [1] * (MAX_TABLE_CELLS + 1)},
        {"a": [1] * (MAX_TABLE_CELLS // 2 + 1), "b": [1] * (MAX_TABLE_CELLS // 2 + 1)},
        {"endless": itertools.count()},
    ):
        with pytest.raises(ValueError, match=r"65536-cell limit.*several log_table calls"):
            table_columns("t", too_many)


def test_artifact_names_up_to_1024_bytes_of_utf8() -> None:
    for fits in ("a" * MAX_ARTIFACT_NAME_BYTES, "é" * (MAX_ARTIFACT_NAME_BYTES // 2)):
        assert check_artifact_name(fits) == fits
    for over in ("a" * (MAX_ARTIFACT_NAME_BYTES + 1), "é" * (MAX_ARTIFACT_NAME_BYTES // 2 + 1)):
        with pytest.raises(ValueError, match=r"artifact name is \d+ bytes.*1024-byte limit"):
            check_artifact_name(over)


def test_lone_surrogates_are_refused_where_they_would_fail_later_and_replaced_in_free_text() -> (
    None
):
    bad = "x\udcff"  # what os.fsdecode makes of a non-UTF-8 byte
    for call in (
        lambda: check_name(bad),
        lambda: check_artifact_name(bad),
        lambda: metric_value(bad, 1 << 20),
        lambda: cell(bad),
        lambda: tag_value(bad),
        lambda: check_properties({"p": bad}),
    ):
        with pytest.raises(ValueError, match="lone surrogate"):
            call()
    assert valid_text(bad) == "x\ufffd"
    assert valid_text("plain ü") == "plain ü"


def test_numbers_and_properties_within_the_limits_always_fit_in_one_message() -> None:
    """The widest envelope and names the SDK allows, with the longest-encoding cells; and
    the first lifecycle event of a run with the most and biggest properties."""
    longest = "😀" * MAX_NAME_CHARS
    stream = Stream(
        run_id=longest,
        experiment="e" * MAX_NAME_CHARS,
        workspace=longest,
        producer_id="p" * 32,
        rank=2**31 - 1,
    )
    cols = {f"{i:03d}" + "😀" * (MAX_NAME_CHARS - 3): [-(2**63)] * 256 for i in range(MAX_COLUMNS)}
    records: list[tuple[str, dict[str, Any]]] = [
        ("Table", {"name": longest, "columns": table_columns(longest, cols)}),
        ("ListValue", {"name": longest, "values": values_list(longest, [-(2**63)] * 65_536)}),
        (
            "Lifecycle",
            {
                "status": "Running",
                "parent_run_id": longest,
                "display_name": longest,
                "compute_target": longest,
                "error": None,
                "properties": check_properties(
                    {f"{i:03d}" + "😀" * 252: "€" * 2730 + "vv" for i in range(MAX_PROPERTIES)}
                ),
            },
        ),
    ]
    for kind, record in records:
        event = event_dict(
            stream, seq=INT64_MAX, event_id=str(uuid.uuid4()), ts_us=-1, kind=kind, record=record
        )
        assert len(Codec().encode(event)) <= DEFAULT_MAX_MESSAGE_BYTES


# ---- through a Run: nothing of a refused call is enqueued ------------------------------------


@pytest.fixture
def limits_ws(tmp_path: Path) -> Iterator[tuple[MemoryWorkspace, MemoryKafka]]:
    kafka = MemoryKafka()
    ws = MemoryWorkspace(kafka, home=tmp_path / "home", api_url=UNREACHABLE_API, options=options())
    yield ws, kafka
    ws.close(5.0)


def test_refused_calls_raise_at_the_call_site_and_enqueue_nothing(
    limits_ws: tuple[MemoryWorkspace, MemoryKafka],
) -> None:
    ws, kafka = limits_ws
    exp = Experiment(ws, "limits")
    run = exp.start_logging(outputs_dir=None)
    run.log("ok", 1.0)
    big_text = "y" * 8000
    refused: list[tuple[str, Callable[[], object]]] = [
        (r"tag value is 8193 bytes", lambda: run.tag("k", "v" * 8193)),
        (r"tag key .* over the 255 limit", lambda: run.tag("k" * 256, "v")),
        (r"65537 values", lambda: run.log_list("l", [1.0] * 65_537)),
        (r"257 columns", lambda: run.log_row("r", **{f"c{i}": 1 for i in range(257)})),
        (r"257 columns", lambda: run.log_table("t", {f"c{i}": [1] for i in range(257)})),
        (r"65536-cell limit", lambda: run.log_table("t", {"a": [1] * 40_000, "b": [1] * 40_000})),
        (r"column name .* over the 255 limit", lambda: run.log_row("r", **{"c" * 256: 1})),
        (r"column name .* over the 255 limit", lambda: run.log_table("t", {"c" * 256: [1]})),
        (r"metric name .* over the 255 limit", lambda: run.log_list("n" * 256, [1])),
        (r"metric name .* over the 255 limit", lambda: run.log_row("n" * 256, x=1)),
        (r"metric name .* over the 255 limit", lambda: run.log_table("n" * 256, {"x": [1]})),
        (r"child run name .* over the 255 limit", lambda: run.child_run("n" * 256)),
        (r"artifact name is 1025 bytes", lambda: run.upload_file("a" * 1025, io.BytesIO(b"x"))),
        (r"image name .* over the 255 limit", lambda: run.log_image("i" * 256, path="x.png")),
        (r"lone surrogate", lambda: run.log("bad\udcff", 1.0)),
        (r"lone surrogate", lambda: run.log("ok", "bad\udcff")),
        (r"lone surrogate", lambda: run.log_list("l", ["bad\udcff"])),
        # Under every count limit, but too big for one message: refused here, never
        # dropped later by the sender.
        (
            r"list 'texts' is \d+ bytes encoded, over the 1048576-byte limit of one message; "
            r"split it over several log_list calls of one name",
            lambda: run.log_list("texts", [big_text] * 200),
        ),
        (
            r"table 'wide' is \d+ bytes encoded.*split the rows over several log_table calls",
            lambda: run.log_table("wide", {"a": [big_text] * 100, "b": [big_text] * 100}),
        ),
        (
            r"row 'r' is \d+ bytes encoded.*shorten its text values",
            lambda: run.log_row("r", **{f"c{i}": big_text for i in range(140)}),
        ),
    ]
    for message, call in refused:
        with pytest.raises(ValueError, match=message):
            call()
    run.log("ok", 2.0)
    run.flush(10.0)

    events = kafka.events()
    assert {e["payload"][0] for e in events} == {"Lifecycle", "MetricBatch"}
    assert run_points(events, run.id) == {"ok": [(0, 1.0), (1, 2.0)]}
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert run.dropped_events == 0


def test_calls_at_the_limits_arrive_whole(
    limits_ws: tuple[MemoryWorkspace, MemoryKafka],
) -> None:
    ws, kafka = limits_ws
    props = {f"p{i:02d}" + "q" * 250: "€" * 2730 for i in range(MAX_PROPERTIES)}
    exp = Experiment(ws, "e" * MAX_RUN_EXPERIMENT_CHARS)
    run = exp.start_logging(display_name="d" * 255, compute_target="c" * 255, properties=props)
    assert len(run.id) == MAX_NAME_CHARS
    square = {f"c{i:03d}": [float(i)] * 256 for i in range(MAX_COLUMNS)}
    run.tag("k" * 255, "€" * 2730 + "vv")  # 8192 bytes
    run.log_list("l", [0.5] * MAX_LIST_VALUES)
    run.log_row("r", **{f"c{i}": i for i in range(MAX_COLUMNS)})
    run.log_table("t", square)
    run.complete()
    run.flush(10.0)

    events = [e for e in kafka.events() if e["run_id"] == run.id]
    (first, *_) = of_kind(events, "Lifecycle")
    assert first["properties"] == props
    (tag,) = of_kind(events, "Tag")
    assert len(tag["value"].encode()) == MAX_TAG_VALUE_BYTES
    assert len(of_kind(events, "ListValue")[0]["values"]) == MAX_LIST_VALUES
    assert len(of_kind(events, "Row")[0]["cells"]) == MAX_COLUMNS
    assert [c["values"] for c in of_kind(events, "Table")[0]["columns"]] == list(square.values())
    assert run.dropped_events == 0


def test_an_experiment_name_too_long_for_run_ids_is_refused_before_a_run_opens(
    limits_ws: tuple[MemoryWorkspace, MemoryKafka],
) -> None:
    ws, kafka = limits_ws
    exp = Experiment(ws, "e" * (MAX_RUN_EXPERIMENT_CHARS + 1))  # still a valid name to read
    with pytest.raises(ValueError, match=r"experiment name is 236 characters.*at most 235"):
        exp.start_logging(outputs_dir=None)
    with pytest.raises(ValueError, match=r"101 properties"):
        Experiment(ws, "ok").start_logging(properties={f"p{i}": "" for i in range(101)})
    ws.flush(5.0)
    assert kafka.events() == []


def test_captured_bursts_are_split_into_events_that_fit_and_never_dropped(
    limits_ws: tuple[MemoryWorkspace, MemoryKafka], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, kafka = limits_ws
    lines = [f"{i:03d}" + "😀" * (MAX_LINE_CHARS - 3) for i in range(100)] + ["bad \udcff"]
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    with Experiment(ws, "exp").start_logging(capture_output=True, outputs_dir=None) as run:
        sys.stdout.write("\n".join(lines) + "\n")  # one write: 6.5 MB of text
    assert sys.stdout is terminal
    run.flush(10.0)

    events = of_kind(kafka.events(), "LogLines")
    assert len(events) > 1
    assert [line for e in events for line in e["lines"]] == [*lines[:-1], "bad \ufffd"]
    assert run.dropped_events == 0


def test_a_failure_text_that_is_not_valid_unicode_still_fails_the_run(
    limits_ws: tuple[MemoryWorkspace, MemoryKafka],
) -> None:
    ws, kafka = limits_ws
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    run.fail("cannot open /data/\udcff.csv")
    run.flush(10.0)
    failed = [e for e in of_kind(kafka.events(), "Lifecycle") if e["status"] == "Failed"]
    assert [e["error"] for e in failed] == ["cannot open /data/\ufffd.csv"]
