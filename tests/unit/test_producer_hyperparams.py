"""Hyper-parameters and errors that teach (issue 15, items 4 and 5), in the SDK alone:
typed tags and properties on the wire, ``log_metrics``, what ``log`` says when given
many values, scalars with ``.item()``, and the warning of ``get_runs`` on an experiment
that never logged. The stored and read-back side is in
tests/integration/test_hyperparams.py; aiokafka's folded log lines in
tests/unit/test_producer_kafka_logs.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from producer import Experiment, RunEndedError, UnknownExperimentWarning
from tests.helpers import run_points
from tests.unit.producer_fakes import (
    Answer,
    FakeApi,
    FakeWorkspace,
    MemoryKafka,
    MemoryWorkspace,
    of_kind,
)


class Scalar:
    """A framework scalar as torch and jax have them: a number only through ``item()``."""

    def __init__(self, value: float | int | bool) -> None:
        self.value = value

    def item(self) -> float | int | bool:
        return self.value


class Tensor:
    """A many-element tensor: ``item()`` refuses, as torch's does (RuntimeError)."""

    def __init__(self, *shape: int) -> None:
        self.shape = tuple(shape)
        self.ndim = len(shape)

    def item(self) -> float:
        raise RuntimeError(f"a Tensor with {math.prod(self.shape)} elements cannot be "
                           "converted to Scalar")


# ---- typed tags and properties -------------------------------------------------------------


def test_properties_and_tags_take_str_int_float_and_bool(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    exp = Experiment(ws, "sweep")
    with exp.start_logging(properties={"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam",
                                       "wd": np.float64(1e-4)}) as run:
        run.tag("batch", 64)
        run.tag("momentum", np.float32(0.5))
        run.tag("frozen", np.bool_(False))
        run.add_properties({"seed": 7, "lr": 0.1})  # lr again with its value: a no-op
    run.flush(10.0)
    events = kafka.events()
    lifecycle = of_kind(events, "Lifecycle")
    first = lifecycle[0]
    assert first["properties"] == {"lr": "0.1", "epochs": "10", "amp": "True", "opt": "adam",
                                   "wd": "0.0001"}
    types = {"lr": "float", "epochs": "int", "amp": "bool", "wd": "float"}
    # NotStarted and Running carry the metadata, Finalizing and Completed none.
    assert [lc["property_types"] for lc in lifecycle] == [types, types, {}, {}]
    assert of_kind(events, "Tag") == [
        {"key": "batch", "value": "64", "target": "tag", "value_type": "int"},
        {"key": "momentum", "value": "0.5", "target": "tag", "value_type": "float"},
        {"key": "frozen", "value": "False", "target": "tag", "value_type": "bool"},
        {"key": "seed", "value": "7", "target": "property", "value_type": "int"},
    ]


def test_a_property_keeps_its_value_and_its_type(ws: MemoryWorkspace) -> None:
    run = Experiment(ws, "sweep").start_logging(properties={"epochs": 10})
    for other in (10.0, True, "10", 11):
        with pytest.raises(ValueError, match="property 'epochs' is already 10"):
            run.add_properties({"epochs": other})
    run.add_properties({"epochs": 10})
    run.complete()


def test_values_a_json_number_cannot_hold_travel_as_text(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "sweep").start_logging()
    run.tag("nan", math.nan)
    run.tag("huge", 2**64)
    run.complete()
    run.flush(10.0)
    assert of_kind(kafka.events(), "Tag") == [
        {"key": "nan", "value": "nan", "target": "tag", "value_type": "str"},
        {"key": "huge", "value": str(2**64), "target": "tag", "value_type": "str"},
    ]


def test_bad_tag_and_property_values_name_the_types_taken(ws: MemoryWorkspace) -> None:
    exp = Experiment(ws, "sweep")
    with pytest.raises(TypeError, match=r"property 'lr' must be a str, int, float or bool, "
                                        r"not list"):
        exp.start_logging(properties={"lr": [0.1, 0.01]})  # type: ignore[dict-item]
    run = exp.start_logging()
    with pytest.raises(TypeError, match="tag value must be a str, int, float or bool, not dict"):
        run.tag("k", {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tag value must be a str, int, float or bool"):
        run.tag("k", np.array([1, 2]))
    run.complete()


# ---- log_metrics ---------------------------------------------------------------------------


def test_log_metrics_logs_every_name_at_one_step_in_one_event(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "train").start_logging()
    run.log_metrics({"loss": 0.31, "acc": 0.92, "epoch": 3, "lr": np.float32(0.5),
                     "grad": Scalar(1.5)}, step=100)
    run.flush(10.0)
    batches = [e for e in kafka.events() if e["payload"][0] == "MetricBatch"]
    assert len(batches) == 1  # one event holds every name's point
    assert sorted(s["name"] for s in batches[0]["payload"][1]["series"]) == [
        "acc", "epoch", "grad", "loss", "lr"]
    got = run_points(kafka.events(), run.id)
    assert got == {"loss": [(100, 0.31)], "acc": [(100, 0.92)], "epoch": [(100, 3)],
                   "lr": [(100, 0.5)], "grad": [(100, 1.5)]}
    assert isinstance(got["epoch"][0][1], int)
    # Without a step each name goes on from its own last step, as run.log does.
    run.log("loss", 0.2, step=7)
    run.log_metrics({"loss": 0.1, "acc": 0.95})
    run.log_metrics({})  # nothing to log
    run.complete()
    run.flush(10.0)
    got = run_points(kafka.events(), run.id)
    assert got["loss"] == [(100, 0.31), (7, 0.2), (8, 0.1)]
    assert got["acc"] == [(100, 0.92), (101, 0.95)]


def test_log_metrics_logs_nothing_when_one_value_is_wrong(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "train").start_logging()
    with pytest.raises(TypeError, match=r"run.log_metrics takes one value per name, and 'acc' "
                                        r"is a list of 2 values; .*run.log_list\('acc'"):
        run.log_metrics({"loss": 0.3, "acc": [0.9, 0.8]}, step=1)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"'h' is a dict; give each of its values a name"):
        run.log_metrics({"h": {"a": 1.0}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="metric name must not be empty"):
        run.log_metrics({"loss": 0.3, "": 1.0})
    with pytest.raises(TypeError, match="step must be an int"):
        run.log_metrics({"loss": 0.3}, step=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"log_metrics takes a dict of name -> value.*not list"):
        run.log_metrics([("loss", 0.3)])  # type: ignore[arg-type]
    run.complete()
    run.flush(10.0)
    assert run_points(kafka.events(), run.id) == {}
    with pytest.raises(RunEndedError):
        run.log_metrics({"loss": 0.3})


# ---- errors that teach ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "call"), [
    ([1.0, 2.0, 3.0], r"run.log_list\('x', values\)"),
    ((1, 2), r"run.log_list\('x', values\)"),
    (np.array([1.0, 2.0, 3.0]), r"an ndarray of shape \(3,\); log a list .*run.log_list"),
    (np.array([]), r"shape \(0,\); log a list of values with run.log_list"),
    (Tensor(3), r"a Tensor of shape \(3,\); .*run.log_list"),
    ([[1, 2], [3, 4]], r"a list of 2 rows; log a table with run.log_table\('x', .*run.log_row"),
    (np.zeros((3, 4)), r"shape \(3, 4\); log a table with run.log_table.*run.log_row\('x'"),
    (np.zeros((8, 8, 3)), r"shape \(8, 8, 3\); an image .* run.log_image\('x', array\)"),
    ({"loss": 0.1, "acc": 0.9}, r"a dict; log several metrics at one step with "
                                r"run.log_metrics\(\{name: value, …\}, step=…\)"),
    ({"angle": [0.0, 1.0]}, r"a dict of lists; log a table with run.log_table\('x'"),
])
def test_log_given_many_values_names_the_call_that_takes_them(
    ws: MemoryWorkspace, kafka: MemoryKafka, value: object, call: str
) -> None:
    run = Experiment(ws, "exp").start_logging()
    with pytest.raises(TypeError, match=r"run.log\('x', …\) takes one value, not .*" + call):
        run.log("x", value)  # type: ignore[arg-type]
    run.complete()
    run.flush(10.0)
    assert run_points(kafka.events(), run.id) == {}


def test_anything_else_keeps_the_plain_type_error(ws: MemoryWorkspace) -> None:
    run = Experiment(ws, "exp").start_logging()
    with pytest.raises(TypeError, match="value must be a float, int, bool or str, not object"):
        run.log("x", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value must be a float, int, bool or str, not NoneType"):
        run.log("x", None)  # type: ignore[arg-type]
    run.complete()


def test_one_element_arrays_and_item_scalars_are_numbers(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.log("x", np.array(0.25))  # 0-d
    run.log("x", np.array([0.5]))  # size 1
    run.log("x", np.array([[7]]))  # size 1, 2-d, an int
    run.log("x", np.float32(1.5))
    run.log("x", np.int64(3))
    run.log("x", np.bool_(True))
    run.log("x", Scalar(2.5))  # torch.tensor(2.5), jax.numpy.float32(2.5)…
    run.log("x", Scalar(4))
    run.log_metrics({"y": np.array([0.75]), "z": Scalar(True)}, step=0)
    run.complete()
    run.flush(10.0)
    got = run_points(kafka.events(), run.id)
    assert got["x"] == [(0, 0.25), (1, 0.5), (2, 7), (3, 1.5), (4, 3), (5, True), (6, 2.5),
                        (7, 4)]
    assert [type(v) for _, v in got["x"]] == [float, float, int, float, int, bool, float, int]
    assert got["y"] == [(0, 0.75)]
    assert got["z"] == [(0, True)]


# ---- get_runs of an experiment that never logged ---------------------------------------------


def _experiments(*names: str) -> Callable[[list[tuple[str, str]]], Answer]:
    page = [{"name": n, "workspace": "default", "runs": 1} for n in names]
    return lambda params: (200, {"experiments": page, "next_cursor": None})


def _no_runs(params: list[tuple[str, str]]) -> Answer:
    return 200, {"runs": [], "next_cursor": None}


def test_get_runs_of_an_unknown_experiment_warns_and_is_empty(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws = make_ws(FakeApi({"/v1/runs": _no_runs,
                          "/v1/experiments": _experiments("diabetes", "mnist", "diabetes-2")}))
    with pytest.warns(UnknownExperimentWarning) as caught:
        assert list(Experiment(ws, "diabetis").get_runs()) == []
    [warning] = caught
    assert str(warning.message) == (
        "no run of experiment 'diabetis' exists in workspace 'default': get_runs() is empty; "
        "did you mean 'diabetes' or 'diabetes-2'?")
    assert warning.filename == __file__  # points at the caller's line
    with pytest.warns(UnknownExperimentWarning, match=r"'zzz'.*check the name \(it has 3 "
                                                      r"other experiments\)"):
        assert list(Experiment(ws, "zzz").get_runs()) == []


def test_an_empty_workspace_says_so(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({"/v1/runs": _no_runs, "/v1/experiments": _experiments()}))
    with pytest.warns(UnknownExperimentWarning, match="it has no experiments yet"):
        assert list(Experiment(ws, "first").get_runs(tags={"k": "v"})) == []


def test_no_warning_for_a_known_experiment_or_one_this_process_logs_into(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws = make_ws(FakeApi({"/v1/runs": _no_runs, "/v1/experiments": _experiments("mnist")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Known, and only the filter matches nothing.
        assert list(Experiment(ws, "mnist").get_runs(tags={"best": None})) == []
        # Not stored yet, but this process is logging into it.
        run = Experiment(ws, "fresh").start_logging(outputs_dir=None)
        assert list(Experiment(ws, "fresh").get_runs()) == []
        run.complete()


def _one_run(params: list[tuple[str, str]]) -> Answer:
    summary: dict[str, Any] = {"run_id": "mnist_1700000000_0a1b2c3d", "experiment": "mnist",
                               "status": "Completed"}
    return 200, {"runs": [summary], "next_cursor": None}


def test_a_non_empty_answer_asks_nothing_more(make_ws: Callable[..., FakeWorkspace]) -> None:
    fake = FakeApi({"/v1/runs": _one_run})  # no /v1/experiments: a 404 if it were asked
    ws = make_ws(fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(Experiment(ws, "mnist").get_runs())) == 1
    assert [r.full_url.split("?")[0].rsplit("/", 1)[-1] for r in fake.requests] == ["runs"]
