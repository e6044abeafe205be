"""Call-site validation rules (the functions behind every Run method)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest

from producer._validate import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_STR,
    MAX_NAME_CHARS,
    cell,
    check_artifact_name,
    check_experiment_name,
    check_name,
    check_step,
    metric_value,
    row_cells,
    table_columns,
    tag_value,
    values_list,
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


def test_tag_values() -> None:
    assert tag_value(None) is None
    assert tag_value("yes") == "yes"
    assert tag_value(0.5) == "0.5"
    with pytest.raises(TypeError):
        tag_value(["no"])
