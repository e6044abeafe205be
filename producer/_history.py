"""``run.get_metric_history(name)``: one series with its steps, values, times and ranks.

``get_metrics()`` keeps Azure ML's shape — a series is the list of its values — so the
steps are not in it. ``get_metric_history`` reads the series route of the API,
``GET /v1/runs/{id}/metrics/{name}?format=columns`` (one array per field), and returns a
``MetricHistory``: equal-length plain lists ``step``, ``value``, ``time`` and ``rank``,
in (step, rank, time) order, every rank's points included.

Two ways to read, as the route has them:

- ``max_points=None`` (the default): every point. The route answers one request with at
  most ``PAGE_POINTS`` points (its ``max_points`` limit, 100,000) and sends buckets
  instead when more match, so a long series is read in windows of steps: the buckets of
  the first answer say how many points each step range holds, consecutive buckets are
  grouped into windows of at most ``PAGE_POINTS`` points, and each window is asked for
  exactly (``step_min``/``step_max``) — a 10M-point series is ~100 answers of 100,000
  points, never one giant one. A window that has grown past the page since (points still
  arriving) is split again the same way. The windows cover the whole step range asked,
  so nothing is skipped; a point logged during the read may or may not be in it. More
  than ``PAGE_POINTS`` points at one step (of one rank, with ``rank=``) cannot be read
  exactly: ``ProducerError`` says so (read it downsampled, or by rank).
- ``max_points=N``: the route's own semantics, in one request — the points when at most
  N match, else at most N buckets by step range (``downsampled`` is True). A bucket is one
  entry of each list: ``step`` its highest step, ``value`` its last value (highest step,
  then latest time, then highest rank), ``time`` its latest time, ``rank`` None; and of
  the bucket-only lists ``step_min`` (its lowest step), ``count`` (its points), ``min``
  and ``max`` (over its finite numeric values; None: none).

``step_min``/``step_max``/``rank`` narrow what is read, as on the route. Times are aware
``datetime``s in UTC, exact to the microsecond. ``to_dict()`` gives the lists as one
dict, ``to_dataframe()`` a pandas ``DataFrame`` (pandas is optional: imported only then).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ._client import ApiClient, Params, decode_non_finite
from ._errors import ApiError, ProducerError
from ._validate import MAX_ABS_STEP, check_step

__all__ = ["MAX_MAX_POINTS", "PAGE_POINTS", "MetricHistory", "check_history_args", "read_history"]

#: The most points (or buckets) one answer of the series route holds: its ``max_points``
#: limit (``MAX_MAX_POINTS`` in ingest/api/routes/metrics.py).
MAX_MAX_POINTS: Final = 100_000
#: How many points a full read asks for per request (tests make it small).
PAGE_POINTS = MAX_MAX_POINTS
#: Ranks are non-negative int32 on the route.
MAX_RANK: Final = 2**31 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MetricHistory:
    """One series of a run: equal-length lists, one entry per point (or per bucket when
    ``downsampled``), in step order. See the module docstring."""

    run_id: str
    name: str
    step: list[int]
    value: list[Any]
    time: list[datetime]
    rank: list[int | None]
    #: Points the lists stand for (more than their length when downsampled).
    total_points: int
    downsampled: bool = False
    #: Downsampled only (else empty): each bucket's lowest step, points, min and max.
    step_min: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    min: list[float | None] = field(default_factory=list)
    max: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)

    def __iter__(self) -> Iterator[tuple[int, Any, datetime, int | None]]:
        """``(step, value, time, rank)`` tuples."""
        return zip(self.step, self.value, self.time, self.rank, strict=True)

    def to_dict(self) -> dict[str, list[Any]]:
        """``{"step": [...], "value": [...], "time": [...], "rank": [...]}`` (plus
        ``step_min``, ``count``, ``min``, ``max`` when downsampled); the lists themselves."""
        out: dict[str, list[Any]] = {
            "step": self.step, "value": self.value, "time": self.time, "rank": self.rank,
        }
        if self.downsampled:
            out.update(step_min=self.step_min, count=self.count, min=self.min, max=self.max)
        return out

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame`` of ``to_dict()``'s columns (``time`` as UTC datetimes).
        ``ImportError`` naming pandas when it is not installed (it is optional)."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError as exc:
            raise ImportError(
                "MetricHistory.to_dataframe() needs pandas, which is not installed "
                "(pip install pandas); to_dict() gives the same columns as plain lists"
            ) from exc
        return pandas.DataFrame(self.to_dict())


def check_history_args(
    max_points: int | None, rank: int | None, step_min: int | None, step_max: int | None
) -> tuple[int, int]:
    """Validate ``get_metric_history``'s arguments as the route would (ValueError /
    TypeError at the call); the step range to read, defaults filled in."""
    if max_points is not None and (
        type(max_points) is not int or not 1 <= max_points <= MAX_MAX_POINTS
    ):
        raise ValueError(f"max_points must be None (every point) or an int in "
                         f"1..{MAX_MAX_POINTS}, not {max_points!r}")
    if rank is not None and (type(rank) is not int or not 0 <= rank <= MAX_RANK):
        raise ValueError(f"rank must be None (every rank) or an int >= 0, not {rank!r}")
    lo = -MAX_ABS_STEP if step_min is None else check_step(step_min)
    hi = MAX_ABS_STEP if step_max is None else check_step(step_max)
    if lo > hi:
        raise ValueError(f"step_min {lo} is above step_max {hi}")
    return lo, hi


def read_history(
    api: ApiClient,
    path: str,
    run_id: str,
    name: str,
    *,
    max_points: int | None,
    rank: int | None,
    lo: int,
    hi: int,
    page_points: int | None = None,
) -> MetricHistory:
    """The series at ``path`` (``/v1/runs/{id}/metrics/{name}``, quoted) as a
    ``MetricHistory``; ``NotFoundError`` for no such run or series. ``page_points``:
    the most points asked for in one request (default ``PAGE_POINTS``, read now)."""
    reader = _Reader(api, path, rank, PAGE_POINTS if page_points is None else page_points)
    if max_points is not None:
        document = reader.ask(lo, hi, max_points)
        columns = _columns(document, path)
        if document.get("downsampled"):
            return _buckets(run_id, name, columns, int(document.get("total_points") or 0))
        reader.add_points(columns)
    else:
        reader.read_all(lo, hi)
    return MetricHistory(
        run_id=run_id, name=name, step=reader.step, value=reader.value, time=reader.time,
        rank=reader.rank, total_points=len(reader.step),
    )


class _Reader:
    """Accumulates the points of exact answers, window by window."""

    def __init__(self, api: ApiClient, path: str, rank: int | None, page_points: int) -> None:
        self.api = api
        self.path = path
        #: The rank asked for (None: every rank).
        self.only_rank = rank
        self.page_points = page_points
        self.step: list[int] = []
        self.value: list[Any] = []
        self.time: list[datetime] = []
        self.rank: list[int | None] = []

    def ask(self, lo: int, hi: int, max_points: int) -> dict[str, Any]:
        params: Params = [
            ("format", "columns"), ("max_points", str(max_points)),
            ("step_min", str(lo)), ("step_max", str(hi)),
            *([("rank", str(self.only_rank))] if self.only_rank is not None else []),
        ]
        return self.api.get_json(self.path, params)

    def add_points(self, columns: dict[str, list[Any]]) -> None:
        steps = columns.get("step") or []
        values = decode_non_finite(columns.get("value") or [])
        ranks = columns.get("rank") or []
        times = columns.get("time_us") or []
        if not len(steps) == len(values) == len(ranks) == len(times):
            raise ApiError(200, "the series' columns have unequal lengths",
                           what=f"GET {self.path}", retriable=False)
        self.step.extend(steps)
        self.value.extend(values)
        self.rank.extend(ranks)
        self.time.extend(_time(us) for us in times)

    def read_all(self, lo: int, hi: int) -> None:
        """Every point of steps [lo, hi], in windows of at most ``page_points``."""
        document = self.ask(lo, hi, self.page_points)
        columns = _columns(document, self.path)
        if not document.get("downsampled"):
            self.add_points(columns)
            return
        for w_lo, w_hi, points, at_step in _windows(lo, hi, columns, self.page_points):
            if points > self.page_points and at_step is not None:
                which = "" if self.only_rank is None else f" of rank {self.only_rank}"
                raise ProducerError(
                    f"GET {self.path}: {points} points at step {at_step}{which}, more than "
                    f"the {self.page_points} one answer of the API holds; read them "
                    "downsampled (max_points=...) or one rank at a time (rank=...)"
                )
            if (w_lo, w_hi) == (lo, hi):  # the buckets did not split the range: no progress
                raise ApiError(200, f"steps {lo}..{hi} came back as one bucket",
                               what=f"GET {self.path}", retriable=False)
            self.read_all(w_lo, w_hi)


def _windows(
    lo: int, hi: int, columns: dict[str, list[Any]], page_points: int
) -> list[tuple[int, int, int, int | None]]:
    """Consecutive buckets grouped into step windows of at most ``page_points`` points
    (a bucket holding more is a window by itself), covering [lo, hi] without gaps:
    ``(first step, last step, points, the step all its points are at, or None)``."""
    windows: list[tuple[int, int, int, int | None]] = []
    start, points, end = lo, 0, lo
    at_step: int | None = None
    for b_min, b_max, n in zip(columns.get("step_min") or [], columns.get("step_max") or [],
                               columns.get("count") or [], strict=True):
        if points and points + int(n) > page_points:
            windows.append((start, end, points, at_step))
            start, points = end + 1, 0
        at_step = int(b_min) if points == 0 and b_min == b_max else None
        points += int(n)
        end = int(b_max)
    windows.append((start, hi, points, at_step))
    return windows


def _columns(document: dict[str, Any], path: str) -> dict[str, list[Any]]:
    columns = document.get("columns")
    if not isinstance(columns, dict):
        raise ApiError(200, "answer has no 'columns' object (format=columns)",
                       what=f"GET {path}", retriable=False)
    return columns


def _buckets(run_id: str, name: str, columns: dict[str, list[Any]], total: int
             ) -> MetricHistory:
    n = len(columns.get("step_max") or [])
    return MetricHistory(
        run_id=run_id,
        name=name,
        step=list(columns.get("step_max") or []),
        value=decode_non_finite(list(columns.get("last") or [])),
        time=[_time(us) for us in columns.get("last_time_us") or []],
        rank=[None] * n,
        total_points=total,
        downsampled=True,
        step_min=list(columns.get("step_min") or []),
        count=list(columns.get("count") or []),
        min=decode_non_finite(list(columns.get("min") or [])),
        max=decode_non_finite(list(columns.get("max") or [])),
    )


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
