"""Call-site validation: cheap checks that raise ``ValueError``/``TypeError`` before anything
is enqueued, so a bad call never affects what was already logged.

The hot path (``Run.log`` with a float value and a known name) does not come here; this
module handles the first use of a name and every non-float value.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

MAX_NAME_CHARS = 255
MAX_ARTIFACT_NAME_CHARS = 1024
#: Explicit steps stay well inside int64 so the implicit ``step + 1`` counter never overflows.
MAX_ABS_STEP = 1 << 62
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

KIND_FLOAT = ord("f")
KIND_INT = ord("i")
KIND_BOOL = ord("b")
KIND_STR = ord("s")

Scalar = bool | int | float | str


class SupportsItem(Protocol):
    """A numpy/torch scalar: ``item()`` gives the Python value."""

    def item(self) -> Any: ...


#: What logging calls accept: Python scalars, or scalars of array libraries.
Value = Scalar | SupportsItem

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXPERIMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def check_name(name: object, what: str = "name") -> str:
    """A metric, column, tag or display name: 1..255 characters, no control characters."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{what} is {len(name)} characters, over the {MAX_NAME_CHARS} limit")
    if _CONTROL.search(name):
        raise ValueError(f"{what} {name!r} contains a control character")
    return name


def check_experiment_name(name: object) -> str:
    """Experiment names go into run ids: letters, digits, '_', '.', '-'; at most 255."""
    if not isinstance(name, str):
        raise TypeError(f"experiment name must be a str, not {type(name).__name__}")
    if not _EXPERIMENT.fullmatch(name):
        raise ValueError(
            f"experiment name {name!r} must be 1-255 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_artifact_name(name: object) -> str:
    """A relative POSIX path inside the run: no '..', '.', empty parts, NUL, '\\' or leading '/'."""
    if not isinstance(name, str):
        raise TypeError(f"artifact name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("artifact name must not be empty")
    if len(name) > MAX_ARTIFACT_NAME_CHARS:
        raise ValueError(
            f"artifact name is {len(name)} characters, over the {MAX_ARTIFACT_NAME_CHARS} limit"
        )
    if _CONTROL.search(name):
        raise ValueError(f"artifact name {name!r} contains a control character (e.g. NUL)")
    if name.startswith("/") or "\\" in name:
        raise ValueError(f"artifact name {name!r} must be a relative POSIX path, e.g. 'outputs/a'")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"artifact name {name!r} must not contain '..', '.' or empty parts")
    return name


def scalar(value: object, what: str = "value") -> Scalar:
    """Coerce to bool/int/float/str; numpy/torch scalars via ``.item()``. Raises TypeError."""
    for _ in range(2):  # at most one ``.item()`` unwrap
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        item = getattr(value, "item", None)
        if not callable(item):
            break
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{what} must be a single float, int, bool or str: {exc}") from exc
    raise TypeError(f"{what} must be a float, int, bool or str, not {type(value).__name__}")


def _int_as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def cell(value: object, what: str = "value") -> Scalar:
    """A list/row/table value for the Avro union; ints outside int64 become floats."""
    v = scalar(value, what)
    if isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
        return _int_as_float(v)
    return v


def metric_value(value: object, max_text_bytes: int) -> tuple[int, float, str | None]:
    """(kind byte, number, text) for one metric point; the slow path of ``Run.log``."""
    v = scalar(value)
    if isinstance(v, bool):
        return KIND_BOOL, 1.0 if v else 0.0, None
    if isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            return KIND_INT, float(v), None
        return KIND_FLOAT, _int_as_float(v), None
    if isinstance(v, float):
        return KIND_FLOAT, v, None
    if len(v) * 4 > max_text_bytes and len(v.encode()) > max_text_bytes:
        raise ValueError(
            f"string value is {len(v.encode())} bytes, over the {max_text_bytes}-byte limit "
            "for one point; upload it as a file instead"
        )
    return KIND_STR, math.nan, v


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, not {type(step).__name__}")
    s = int(step)
    if not -MAX_ABS_STEP <= s <= MAX_ABS_STEP:
        raise ValueError(f"step {s} is outside ±2**62")
    return s


def values_list(name: str, values: object) -> list[Scalar]:
    if isinstance(values, str | bytes | bytearray | Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"{name!r}: values must be a list of scalars, not {type(values).__name__}")
    return [cell(v, f"{name!r} item") for v in values]


def row_cells(name: str, cells: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not cells:
        raise ValueError(f"row {name!r} needs at least one column, e.g. log_row(name, x=1, y=2)")
    return [
        {"column": check_name(col, "column name"), "value": cell(v, f"column {col!r}")}
        for col, v in cells.items()
    ]


def table_columns(name: str, table: object) -> list[dict[str, Any]]:
    if not isinstance(table, Mapping):
        raise TypeError(f"table {name!r} must be a dict of column -> list, not {type(table)!r}")
    if not table:
        raise ValueError(f"table {name!r} has no columns")
    columns = [
        {"name": check_name(col, "column name"), "values": values_list(f"{name}.{col}", values)}
        for col, values in table.items()
    ]
    lengths = {c["name"]: len(c["values"]) for c in columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table {name!r} has columns of unequal length: {lengths}")
    return columns


def tag_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise TypeError(f"tag value must be a str (or None), not {type(value).__name__}")
