"""Call-site validation: cheap checks that raise ``ValueError``/``TypeError`` before anything
is enqueued, so a bad call never affects what was already logged.

The hot path (``Run.log`` with a float value and a known name) does not come here; this
module handles the first use of a name and every non-float value.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sized
from itertools import islice
from typing import Any, Protocol

# Limits (README "Limits" lists them). Names count characters, artifact names and free
# text count UTF-8 bytes. Names of ≤ 255 characters (≤ 1020 bytes) and artifact names of
# ≤ 1024 bytes keep every index entry (run id + name + producer id) under PostgreSQL's
# 2704-byte btree limit, so the store never refuses what the SDK accepted. The count
# limits make a list or table of numbers always fit in one 1 MiB message (a cell is at
# most 11 bytes on the wire; 256 column names of 1020 bytes are another 262 KB); text
# cells are bounded by the message limit itself, checked by encoding the event at the
# call site (``Run._enqueue``).

#: Metric, column, tag key, display, compute target, property and child run names.
MAX_NAME_CHARS = 255
#: Artifact (file, image) names, a relative POSIX path.
MAX_ARTIFACT_NAME_BYTES = 1024
#: A run id is ``{experiment}_{unix seconds}_{8 hex}`` and must itself be a valid name.
RUN_ID_SUFFIX_CHARS = 20
MAX_RUN_EXPERIMENT_CHARS = MAX_NAME_CHARS - RUN_ID_SUFFIX_CHARS
#: One tag value (MLflow allows 8000 characters; this is 8 KiB of UTF-8).
MAX_TAG_VALUE_BYTES = 8 * 1024
#: Properties of a run (given once, at start) and the size of each value.
MAX_PROPERTIES = 100
MAX_PROPERTY_VALUE_BYTES = 8 * 1024
#: Values of one ``log_list`` call.
MAX_LIST_VALUES = 65_536
#: Columns of one ``log_table`` call, cells of one ``log_row`` call.
MAX_COLUMNS = 256
#: Cells (rows x columns) of one ``log_table`` call.
MAX_TABLE_CELLS = 65_536
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
#: Lone surrogates (e.g. from ``surrogateescape``d bytes) have no UTF-8 encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")
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
    if not name.isascii() and _SURROGATE.search(name):
        raise ValueError(f"{what} {name!r} contains a lone surrogate (not valid Unicode)")
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
    if not name.isascii() and _SURROGATE.search(name):
        raise ValueError(f"artifact name {name!r} contains a lone surrogate (not valid Unicode)")
    if len(name) * 4 > MAX_ARTIFACT_NAME_BYTES and (size := utf8_bytes(name)) > (
        MAX_ARTIFACT_NAME_BYTES
    ):
        raise ValueError(
            f"artifact name is {size} bytes of UTF-8, over the {MAX_ARTIFACT_NAME_BYTES}-byte "
            "limit; use a shorter path"
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
    if isinstance(v, str) and not v.isascii() and _SURROGATE.search(v):
        raise ValueError(f"{what} {v[:80]!r} contains a lone surrogate (not valid Unicode)")
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
    if not v.isascii() and _SURROGATE.search(v):
        # Would fail only when the sender encodes the batch, taking its other points along.
        raise ValueError(f"string value {v[:80]!r} contains a lone surrogate (not valid Unicode)")
    if len(v) * 4 > max_text_bytes and len(v.encode()) > max_text_bytes:
        raise ValueError(
            f"string value is {len(v.encode())} bytes, over the {max_text_bytes}-byte limit "
            "for one point; upload it as a file instead"
        )
    return KIND_STR, math.nan, v


def not_one_value(call: str, name: object, value: object) -> str | None:
    """What to call instead when ``run.log``/``run.log_metrics`` is given many values (a
    list, tuple, array or dict) for ``name``; None if ``value`` is not such a thing. Only
    reached once ``scalar`` refused the value (a size-1 array is one value)."""
    head = (
        f"run.log_metrics takes one value per name, and {name!r} is"
        if call == "log_metrics"
        else f"run.log({name!r}, …) takes one value, not"
    )
    ndim = getattr(value, "ndim", None)
    shape = getattr(value, "shape", None)
    if isinstance(ndim, int) and isinstance(shape, tuple | list):
        what = type(value).__name__
        article = "an" if what[:1].lower() in "aeiou" or what == "ndarray" else "a"
        kind = f"{article} {what} of shape {tuple(shape)}"
        dims = ndim
    elif isinstance(value, list | tuple | range):
        dims = 2 if value and isinstance(value[0], list | tuple) else 1
        kind = f"a {type(value).__name__} of {len(value)} {'rows' if dims == 2 else 'values'}"
    elif isinstance(value, Mapping):
        if any(isinstance(v, list | tuple) or hasattr(v, "ndim") for v in value.values()):
            return (
                f"{head} a dict of lists; log a table with "
                f"run.log_table({name!r}, {{column: [values…]}})"
            )
        if call == "log_metrics":
            return f"{head} a dict; give each of its values a name of its own, e.g. {name}.key"
        return (
            f"{head} a dict; log several metrics at one step with "
            "run.log_metrics({name: value, …}, step=…)"
        )
    else:
        return None
    if dims <= 1:
        return (
            f"{head} {kind}; log a list of values with run.log_list({name!r}, values), "
            "or one value per step with run.log"
        )
    if dims == 2:
        return (
            f"{head} {kind}; log a table with run.log_table({name!r}, {{column: [values…]}}) "
            f"or one row at a time with run.log_row({name!r}, column=value, …)"
        )
    return (
        f"{head} {kind}; an image (HxWx3 or HxWx4) goes to run.log_image({name!r}, array), "
        "other arrays to a file (run.upload_file)"
    )


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, not {type(step).__name__}")
    s = int(step)
    if not -MAX_ABS_STEP <= s <= MAX_ABS_STEP:
        raise ValueError(f"step {s} is outside ±2**62")
    return s


def values_list(name: str, values: object, limit: int = MAX_LIST_VALUES) -> list[Scalar]:
    """At most ``limit`` scalars; a longer iterable raises before it is read to the end."""
    if isinstance(values, str | bytes | bytearray | Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"{name!r}: values must be a list of scalars, not {type(values).__name__}")
    if isinstance(values, Sized) and len(values) > limit:
        raise _too_many_values(name, len(values), limit)
    out = [cell(v, f"{name!r} item") for v in islice(values, limit + 1)]
    if len(out) > limit:
        raise _too_many_values(name, None, limit)
    return out


class _TooManyValuesError(ValueError):
    pass


def _too_many_values(name: str, count: int | None, limit: int) -> ValueError:
    have = f"{count} values" if count is not None else "more values"
    return _TooManyValuesError(
        f"{name!r} has {have}, over the {limit} limit of one call; split it over several "
        "calls with the same name (they append in order) or upload it as a file"
    )


def row_cells(name: str, cells: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not cells:
        raise ValueError(f"row {name!r} needs at least one column, e.g. log_row(name, x=1, y=2)")
    if len(cells) > MAX_COLUMNS:
        raise ValueError(
            f"row {name!r} has {len(cells)} columns, over the {MAX_COLUMNS} limit; "
            "log the other columns under another name or upload a file"
        )
    return [
        {"column": check_name(col, "column name"), "value": cell(v, f"column {col!r}")}
        for col, v in cells.items()
    ]


def table_columns(name: str, table: object) -> list[dict[str, Any]]:
    if not isinstance(table, Mapping):
        raise TypeError(f"table {name!r} must be a dict of column -> list, not {type(table)!r}")
    if not table:
        raise ValueError(f"table {name!r} has no columns")
    if len(table) > MAX_COLUMNS:
        raise ValueError(
            f"table {name!r} has {len(table)} columns, over the {MAX_COLUMNS} limit; "
            "log the other columns under another name or upload a file"
        )
    # Equal columns of more rows than this would pass the cell limit.
    max_rows = MAX_TABLE_CELLS // len(table)
    columns = []
    for col, values in table.items():
        col_name = check_name(col, "column name")
        try:
            columns.append({"name": col_name, "values": values_list(col_name, values, max_rows)})
        except _TooManyValuesError:
            raise ValueError(
                f"table {name!r} has over {max_rows} rows x {len(table)} columns, over the "
                f"{MAX_TABLE_CELLS}-cell limit of one call; split the rows over several "
                "log_table calls with the same name (they append in order)"
            ) from None
    lengths = {c["name"]: len(c["values"]) for c in columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table {name!r} has columns of unequal length: {lengths}")
    return columns


def tag_value(value: object) -> str | None:
    """Text of a display name or description (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"value must be a str (or None), not {type(value).__name__}")
    return _short_text(value, "value", MAX_TAG_VALUE_BYTES)


def hyper_value(value: object, what: str, max_bytes: int) -> Scalar:
    """A tag or property value: a str, int, float or bool (numpy/torch scalars through
    ``.item()``), kept as that type; its text (``wire_text``) at most ``max_bytes``."""
    if value.__class__ is str:
        typed: Scalar = value
    else:
        try:
            typed = scalar(value, what)
        except TypeError:
            raise TypeError(
                f"{what} must be a str, int, float or bool, not {type(value).__name__}"
            ) from None
    try:
        text = wire_text(typed)[0]
    except ValueError:  # an int past Python's 4300-digit limit of str()
        raise ValueError(f"{what} is an int of over 4300 digits; upload it as a file") from None
    _short_text(text, what, max_bytes)
    return typed


def wire_text(value: Scalar) -> tuple[str, str]:
    """(text, type) of a tag or property value in an event (schema v3 ``ScalarType``).

    The text is Python's ``str`` of the value (a float's shortest repr; ``True``/``False``),
    which is what readers of schema v1/v2 store. Ints outside 64 bits, NaN and infinities
    travel as text (type ``str``): JSON numbers in the store could not hold them as given.
    """
    if isinstance(value, bool):
        return ("True" if value else "False"), "bool"
    if isinstance(value, int):
        return str(value), ("int" if INT64_MIN <= value <= INT64_MAX else "str")
    if isinstance(value, float):
        return repr(value), ("float" if math.isfinite(value) else "str")
    return value, "str"


def same_value(a: Scalar, b: Scalar) -> bool:
    """Equal and of the same type (``1``, ``1.0`` and ``True`` are three values here)."""
    return type(a) is type(b) and a == b


def check_tag_value(value: object) -> Scalar | None:
    """A tag's value: None (a tag without value) or a str, int, float or bool."""
    if value is None:
        return None
    return hyper_value(value, "tag value", MAX_TAG_VALUE_BYTES)


def check_properties(properties: Mapping[str, object]) -> dict[str, Scalar]:
    """A run's properties: at most ``MAX_PROPERTIES``, names as names, values str, int,
    float or bool (kept as given) of bounded text."""
    if not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a dict, not {type(properties).__name__}")
    if len(properties) > MAX_PROPERTIES:
        raise ValueError(
            f"{len(properties)} properties, over the {MAX_PROPERTIES} limit; "
            "put the rest in tags (run.tag) or a file"
        )
    return {
        check_name(key, "property name"): hyper_value(
            value, f"property {key!r}", MAX_PROPERTY_VALUE_BYTES
        )
        for key, value in properties.items()
    }


def _short_text(text: str, what: str, max_bytes: int) -> str:
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError(f"{what} contains a lone surrogate (not valid Unicode)")
    if len(text) * 4 > max_bytes and (size := utf8_bytes(text)) > max_bytes:
        raise ValueError(
            f"{what} is {size} bytes of UTF-8, over the {max_bytes}-byte limit; "
            "upload long text as a file (run.upload_file)"
        )
    return text


def utf8_bytes(text: str) -> int:
    return len(text.encode())


def valid_text(text: str) -> str:
    """Free text the SDK must not refuse (captured output, error tracebacks): lone
    surrogates become U+FFFD instead of failing the event."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)
