"""``RunHandle``: what the handle training code logs through does, once it is open.

Every method validates its arguments and enqueues; none waits for the network. ``log``
is the hot path (about a microsecond of Python): a float into a known series is a
type check, one dict lookup and three list appends under the buffer lock. Everything
else (first use of a name, non-float values, tables, files) takes a slower, still
non-blocking path that checks the event will fit in one message before enqueueing it.

Each run handle is its own producer identity (``producer_id``), so its ``seq`` numbers
are gap-free on the run's partition; child runs and other ranks have their own.

Handles attached by id (``Run(experiment, id)``, ``Experiment.get_runs``) have no sender
and a closed stream, so every logging call raises ``ReadOnlyRunError`` (``log`` through
its existing closed-stream check, at no cost to the hot path). Once a handle ended its
run (``complete``/``fail``/``cancel``, or the process's end: ``_exit.py``) its stream is
closed the same way: logging, tagging, uploading, child runs and ``fail`` raise
``RunEndedError`` naming the run and its status. Metadata edits — ``tag``,
``remove_tags``, ``add_properties``, ``display_name``/``description`` set — otherwise
work on every handle: through the run's own stream while it is open (ordered with its
other events), else (a handle fetched by id, or closed without ending the run) through an
edit stream the handle opens on first use (its own producer, so exactly-once and
ordering hold as for any events). Tagging a run after it ended is that explicit path:
``Run(experiment, run_id).tag(...)``. The read methods come from ``RunReads``
(``_reads.py``).

A handle talks to its workspace only through its ``Session`` (``_session.py``). The public
``Run`` (``_workspace.py``) is this class plus the ways to get a handle (``child_run``,
``attach``, ``get_context``, ``resume`` and the factories behind ``Experiment.start_logging`` and
``get_runs``), which live beside ``Workspace`` and ``Experiment`` because those three
construct each other.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
import traceback
import uuid
from collections.abc import Iterable, Mapping
from io import BytesIO
from os import sched_yield
from pathlib import Path
from time import time_ns
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self

from schemas.codec import MessageTooLargeError
from schemas.event_ids import new_event_id

from ._batch import event_dict, max_text_bytes
from ._buffer import POINT_COST_BYTES, Buffer, PendingEvent, Series, Stream
from ._capture import OutputCapture
from ._errors import ReadOnlyRunError, RunClosedError, RunEndedError, SpoolError
from ._exit import INTERRUPTED, TERMINATED, disown, own, terminated_by_signal
from ._images import (
    ImageArray,
    encode_png,
    image_artifact_name,
    image_content_type,
    image_file_suffix,
    is_array,
)
from ._reads import RunReads
from ._session import DEFAULT_FLUSH_TIMEOUT_S, Session
from ._typed_metrics import CONTENT_TYPE, typed_metric_json
from ._validate import (
    INT64_MAX,
    KIND_FLOAT,
    MAX_ABS_STEP,
    Scalar,
    Value,
    check_artifact_name,
    check_name,
    check_properties,
    check_step,
    check_tag_value,
    metric_value,
    not_one_value,
    row_cells,
    same_value,
    table_columns,
    tag_value,
    valid_text,
    values_list,
    wire_text,
)

if TYPE_CHECKING:
    from ._sender import Sender
    from ._workspace import Experiment, Run

logger = logging.getLogger(__name__)

#: Longest error text a Failed event carries (the end of a traceback is kept).
MAX_ERROR_CHARS = 64 * 1024


class SavesFigures(Protocol):
    """``matplotlib.pyplot`` or a ``matplotlib.figure.Figure``."""

    def savefig(self, *args: Any, **kwargs: Any) -> Any: ...


class RunHandle(RunReads):
    """One run of an experiment, as seen by this process (one rank); see ``Run``."""

    def __init__(
        self,
        *,
        experiment: Experiment,
        session: Session,
        stream: Stream,
        sender: Sender | None,
        parent: Run | None,
        world_size: int,
        display_name: str | None,
        compute_target: str | None,
        properties: Mapping[str, Scalar],
        outputs_dir: Path | None,
        known_status: str | None = None,
        description: str | None = None,
        attempt: int = 0,
    ) -> None:
        """Internal; ``stream`` is already registered with ``sender`` (see ``Run._open``).

        Without a sender the handle is read-only and ``stream`` must be closed.
        """
        self._experiment = experiment
        self._session = session
        self._stream = stream
        self._series = stream.series
        self._sender = sender
        self._buffer = sender.buffer if sender is not None else Buffer(max_bytes=0, wake=_no_wake)
        self._codec = session.codec
        self._max_text_bytes = max_text_bytes(stream, session.options.batch_max_bytes)
        self._parent = parent
        self._world_size = world_size
        self._display_name = display_name
        self._compute_target = compute_target
        self._properties = dict(properties)
        self._outputs_dir = outputs_dir
        self._capture: OutputCapture | None = None
        self._final_status: str | None = None
        self._released = False
        self._description = description
        #: Which try of a submitted run this handle reports statuses for (``Run.open``).
        self._attempt = attempt
        #: The handle that carries edits once this one's stream is closed (``_edit``).
        self._editor: RunHandle | None = None
        self._uploaded: set[str] = set()
        #: ``log_image``'s next step per image name (as ``Series.next_step`` for ``log``).
        self._image_steps: dict[str, int] = {}
        self._lock = threading.Lock()
        #: The last status this handle sent or read (what a notebook shows, without I/O).
        self._known_status = known_status
        #: The process that owns the run (``_exit.py``): it ends the run if it exits first.
        self.owner_pid: int | None = None
        if sender is not None:
            session.track(self)

    # ---- fork (see Fork in _session.py) ------------------------------------------------

    def writable_in_child(self) -> bool:
        """In a fork()ed child: whether this handle was open for logging at the fork."""
        return self._sender is not None and not self._stream.closed

    def continue_in_child(self) -> Stream:
        """In a fork()ed child: a new stream (own producer id, same run and rank) whose
        series go on from the parent's next steps; the parent's unsent points stay its."""
        old = self._stream
        stream = Stream(
            run_id=old.run_id,
            experiment=old.experiment,
            workspace=old.workspace,
            producer_id=uuid.uuid4().hex,
            rank=old.rank,
        )
        for name, series in old.series.items():
            fresh = stream.series[name] = Series(name)
            fresh.next_step = series.next_step
        return stream

    def bind(self, stream: Stream, sender: Sender) -> None:
        """Log through ``stream`` of ``sender`` from now on (a fork()ed child)."""
        self._stream = stream
        self._series = stream.series
        self._sender = sender
        self._buffer = sender.buffer
        self._lock = threading.Lock()
        self._capture = None  # the parent's capture thread did not survive the fork
        self._editor = None

    def continue_steps(
        self, next_steps: Mapping[str, int], image_steps: Mapping[str, int]
    ) -> None:
        """``Run.resume``: ``log`` and ``log_image`` without ``step=`` go on from these
        steps (one past each series' and image's highest stored step) instead of 0."""
        with self._buffer.lock:
            for name, step in next_steps.items():
                series = self._series.setdefault(name, Series(name))
                series.next_step = max(series.next_step, step)
        with self._lock:
            for name, step in image_steps.items():
                self._image_steps[name] = max(self._image_steps.get(name, 0), step)

    # ---- identity --------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._stream.run_id

    @property
    def experiment(self) -> Experiment:
        return self._experiment

    @property
    def parent(self) -> Run | None:
        return self._parent

    @property
    def rank(self) -> int:
        return self._stream.rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def display_name(self) -> str | None:
        """The run's display name, as this handle knows it; settable on any handle but the
        one that ended the run, so also after it ended through ``Run(experiment, run_id)``
        (``get_details()`` reads the stored one)."""
        return self._display_name

    @display_name.setter
    def display_name(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError(f"display_name must be a non-empty str, not {value!r}")
        text = tag_value(value)
        self._edit("display_name", "display_name", text)
        self._display_name = text

    @property
    def description(self) -> str | None:
        """The run's description, as this handle knows it; settable as ``display_name``
        (up to 8 KiB of UTF-8)."""
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"description must be a str, not {type(value).__name__}")
        text = tag_value(value)
        self._edit("description", "description", text)
        self._description = text

    @property
    def producer_id(self) -> str:
        return self._stream.producer_id

    @property
    def dropped_events(self) -> int:
        """Events of this handle lost because the buffer and the spool were both full."""
        return self._stream.dropped

    @property
    def closed(self) -> bool:
        return self._stream.closed

    # ---- logging ---------------------------------------------------------------------

    def log(self, name: str, value: Value, description: str = "", step: int | None = None) -> None:
        """Log one value; repeated calls with one name form a series.

        ``step`` defaults to one past the series' previous step (0 first). ``description``
        is accepted as in Azure ML and not stored.
        """
        # Microseconds, divided here: 45 ns on this call, where the sender's pass would
        # spend ~120 ns a point converting a whole column with the GIL held.
        t_us = time_ns() // 1000
        if description.__class__ is not str:
            raise TypeError(
                f"description must be a str, not {type(description).__name__}; "
                "a step is given by keyword: run.log(name, value, step=3)"
            )
        number: float
        if isinstance(value, float):  # numpy.float64 too (a float subclass)
            fast = True
            kind = KIND_FLOAT
            number = value
            text = None
            cost = POINT_COST_BYTES
        else:
            kind, number, text = self._metric_value("log", name, value)
            fast = False
            cost = POINT_COST_BYTES + (len(text) if text is not None else 0)
        if step is not None and (
            type(step) is not int or not -MAX_ABS_STEP <= step <= MAX_ABS_STEP
        ):
            step = check_step(step)
        series = self._series.get(name) or self._new_series(name)
        buf = self._buffer
        refused: bool | None  # None: logged, and the sender is far behind
        with buf.lock:
            if self._stream.closed or buf.nbytes >= buf.max_bytes:
                refused = True
            else:
                refused = False
                if step is None:
                    step = series.next_step
                series.next_step = step + 1
                n = series.n  # Series.write, inlined (a method call here costs ~5%)
                if n >= series.cap:
                    series.grow()
                    n = series.n  # 0 if the set was retired
                series.steps[n] = step
                series.times[n] = t_us
                if fast and series.kinds is None:
                    series.values[n] = number
                else:
                    series.add_other(n, kind, number, text)
                series.n = n + 1
                buf.nbytes += cost
                if buf.nbytes > buf.wake_bytes:
                    if not buf.woken:
                        buf.woken = True
                        buf.wake()
                    elif buf.nbytes > buf.yield_bytes:
                        refused = None  # logged; the sender is far behind: let it run
        if refused is None:
            sched_yield()
        elif refused:
            if self._stream.closed:
                raise self._closed_error()
            buf.count_drop(self._stream)

    def _new_series(self, name: str) -> Series:
        check_name(name, "metric name")
        with self._buffer.lock:
            return self._series.setdefault(name, Series(name))

    def _metric_value(self, call: str, name: str, value: object) -> tuple[int, float, str | None]:
        """The slow path of one value: numbers of other types, ``.item()`` scalars (numpy,
        torch, jax; a size-1 array), text; many values raise ``TypeError`` naming the call
        that takes them (``log_list``, ``log_table``/``log_row``, ``log_metrics``)."""
        try:
            return metric_value(value, self._max_text_bytes)
        except TypeError:
            hint = not_one_value(call, name, value)
            if hint is None:
                raise
            raise TypeError(hint) from None

    def log_metrics(self, metrics: Mapping[str, Value], step: int | None = None) -> None:
        """Log several metrics at one step: ``run.log_metrics({"loss": 0.31, "acc": 0.92},
        step=100)`` is ``run.log`` of each name at that step, in one call — the points are
        checked first (nothing is logged if one is wrong), then added under one lock with
        one time (all or none, if the buffer is full), and leave in the same batch event as
        the rest of that moment's points (split only where a batch passes the size of one
        message).

        Without ``step`` each name takes one past its own previous step (0 first), as
        ``run.log`` does. Values as for ``run.log``: float, int, bool, str, or a scalar
        with ``.item()`` (numpy, torch, jax)."""
        t_us = time_ns() // 1000
        if not isinstance(metrics, Mapping):
            raise TypeError(
                "log_metrics takes a dict of name -> value, e.g. run.log_metrics({'loss': "
                f"0.3, 'acc': 0.9}}, step=10), not {type(metrics).__name__}"
            )
        if step is not None:
            step = check_step(step)
        points: list[tuple[str, int, float, str | None]] = []
        cost = 0
        for name, value in metrics.items():
            check_name(name, "metric name")
            if isinstance(value, float):
                points.append((name, KIND_FLOAT, value, None))
                cost += POINT_COST_BYTES
            else:
                kind, number, text = self._metric_value("log_metrics", name, value)
                points.append((name, kind, number, text))
                cost += POINT_COST_BYTES + (len(text) if text is not None else 0)
        if not points:
            return
        series = [self._series.get(name) or self._new_series(name) for name, *_ in points]
        buf = self._buffer
        with buf.lock:
            if self._stream.closed or buf.nbytes >= buf.max_bytes:
                refused = True
            else:
                refused = False
                for each, (_, kind, number, text) in zip(series, points, strict=True):
                    at = each.next_step if step is None else step
                    each.next_step = at + 1
                    each.write(at, t_us, kind, number, text)
                buf.nbytes += cost
                if buf.nbytes > buf.wake_bytes:
                    if not buf.woken:
                        buf.woken = True
                        buf.wake()
                    elif buf.nbytes > buf.yield_bytes:
                        refused = None  # logged; the sender is far behind: let it run
        if refused is None:
            sched_yield()
        elif refused:
            if self._stream.closed:
                raise self._closed_error()
            buf.count_drop(self._stream, len(points))

    def log_list(self, name: str, value: Iterable[Value], description: str = "") -> None:
        """Log a list of values under one name (any iterable: a list, a generator…);
        repeated calls with one name append."""
        check_name(name, "metric name")
        _check_description(description)
        self._enqueue("ListValue", {"name": name, "values": values_list(name, value)})

    def log_row(self, name: str, description: Value | None = None, **kwargs: Value) -> None:
        """Log one row; repeated calls with one name build a table, one column per keyword
        (``description``, the second positional argument as in Azure ML, is not stored)."""
        check_name(name, "metric name")
        if description is not None:
            _check_description(description)
        self._enqueue("Row", {"name": name, "cells": row_cells(name, kwargs)})

    def log_table(
        self, name: str, value: Mapping[str, Iterable[Value]], description: str = ""
    ) -> None:
        """Log a table given as ``{column: [values...]}``; columns must be equally long."""
        check_name(name, "metric name")
        _check_description(description)
        self._enqueue("Table", {"name": name, "columns": table_columns(name, value)})

    def tag(self, key: str, value: Value | None = None) -> None:
        """Tag the run with a key and an optional value: a str, int, float or bool (numpy
        and torch scalars too), stored and read back as that type (``get_tags()``), where
        Azure ML keeps the ``str``. Works on any handle but the one that ended the run
        (``RunEndedError``): tag an ended run through ``Run(experiment, run_id)``."""
        check_name(key, "tag key")
        typed = check_tag_value(value)
        if typed is None:
            self._edit("tag", key, None)
        else:
            self._edit("tag", key, *wire_text(typed))

    def remove_tags(self, tags: Iterable[str]) -> None:
        """Remove the tags with these keys (a list of keys, as in Azure ML); a key the run
        does not carry is ignored. Works on any handle but the one that ended the run."""
        if isinstance(tags, str):
            raise TypeError(f"remove_tags takes a list of keys, e.g. [{tags!r}]")
        keys = [check_name(key, "tag key") for key in tags]
        for key in keys:
            self._edit("untag", key, None)

    def add_properties(self, properties: Mapping[str, Value]) -> None:
        """Add properties: like tags, but immutable — a key keeps the first value it was
        given. Values are str, int, float or bool, stored and read back as that type.
        Re-adding a known key with its value (of its type) is a no-op; with another value
        it raises ``ValueError``. Works on any handle but the one that ended the run (add
        properties to an ended run through ``Run(experiment, run_id)``)."""
        self._refuse_if_ended("add_properties")
        added = check_properties(properties)
        for key, value in added.items():
            known = self._properties.get(key)
            if known is not None and not same_value(known, value):
                raise ValueError(
                    f"property {key!r} is already {known!r}: properties cannot change once "
                    "set (use a tag for a value that changes)"
                )
        for key, value in added.items():
            if key not in self._properties:
                self._edit("property", key, *wire_text(value))
                self._properties[key] = value

    def log_image(
        self,
        name: str,
        path: str | os.PathLike[str] | ImageArray | None = None,
        plot: SavesFigures | ImageArray | None = None,
        description: str = "",
        *,
        step: int | None = None,
    ) -> None:
        """Log an image of step ``step``: an image file (``path``: PNG, JPEG, GIF, BMP,
        WebP, AVIF or SVG), a matplotlib figure (``plot``: pyplot or a Figure), or an
        array (as ``path`` or ``plot``: HxW grayscale, HxWx3 RGB or HxWx4 RGBA, of uint8
        or of floats in [0, 1]; encoded as PNG, numpy imported only then).

        Every step is kept: ``step`` defaults to one past this handle's previous step of
        ``name`` (0 first), and step ``s`` is the file ``<name>/step_<s><ext>``
        (``loss_curve/step_3.png``; ``get_file_names()`` lists it, the studio shows the
        steps of each image). The same name and step again replaces that step's image.
        The bytes are read, or encoded, now: bad input raises ``TypeError``/``ValueError``
        here and logs nothing."""
        check_name(name, "image name")
        _check_description(description)
        if (path is None) == (plot is None):
            raise ValueError(
                "log_image needs exactly one of path= (an image file or an array) or plot= "
                "(a matplotlib figure)"
            )
        if step is not None:
            step = check_step(step)
        self._open_sender()  # an ended or read-only run refuses before any encoding
        content: Path | BinaryIO
        if is_array(path) or is_array(plot):
            content, suffix = BytesIO(encode_png(path if path is not None else plot)), ".png"
        elif path is not None:
            if not isinstance(path, str | os.PathLike):
                raise TypeError(
                    "log_image: path must be an image file's path or an image array (HxW, "
                    f"HxWx3, HxWx4), not {type(path).__name__}"
                )
            content = Path(path)
            suffix = image_file_suffix(content)
        else:
            savefig = getattr(plot, "savefig", None)
            if not callable(savefig):
                raise TypeError(
                    "log_image: plot must be matplotlib.pyplot, a matplotlib Figure or an "
                    f"image array, not {type(plot).__name__}"
                )
            png = BytesIO()
            savefig(png, format="png")
            png.seek(0)
            content, suffix = png, ".png"
        with self._lock:
            at = self._image_steps.get(name, 0) if step is None else step
            stored = check_artifact_name(image_artifact_name(name, at, suffix))
            self._image_steps[name] = at + 1
        self._put_artifact(stored, "IMAGE", content, image_content_type(suffix))

    def log_confusion_matrix(self, name: str, value: str | Mapping[str, Any],
                             description: str = "") -> None:
        """Log a confusion matrix: ``value`` is Azure ML's JSON (a ``str`` or a ``dict``)
        ``{"schema_type": "confusion_matrix", "schema_version": "1.0.0", "data":
        {"class_labels": [...C labels], "matrix": [...C rows of C numbers]}}``.

        Checked now (``ValueError`` names what is wrong), stored as the JSON file ``name``
        and listed by ``get_metrics()``; see ``_typed_metrics.py`` for the four formats."""
        self._log_typed("confusion_matrix", name, value, description)

    def log_accuracy_table(self, name: str, value: str | Mapping[str, Any],
                           description: str = "") -> None:
        """Log an accuracy table: Azure ML's JSON with ``schema_type`` ``accuracy_table``
        (version 1.0.1), ``data`` with ``class_labels`` (C), ``probability_thresholds``
        and ``percentile_thresholds`` (M numbers each) and ``probability_tables`` and
        ``percentile_tables`` of shape [C][M][4] (TP, FP, TN, FN integers); as
        ``log_confusion_matrix`` otherwise."""
        self._log_typed("accuracy_table", name, value, description)

    def log_residuals(self, name: str, value: str | Mapping[str, Any],
                      description: str = "") -> None:
        """Log a histogram of residuals: Azure ML's JSON with ``schema_type`` ``residuals``,
        ``data`` with ``bin_edges`` (n + 1 numbers) and ``bin_counts`` (n); as
        ``log_confusion_matrix`` otherwise."""
        self._log_typed("residuals", name, value, description)

    def log_predictions(self, name: str, value: str | Mapping[str, Any],
                        description: str = "") -> None:
        """Log binned predictions: Azure ML's JSON with ``schema_type`` ``predictions``,
        ``data`` with ``bin_averages``, ``bin_errors``, ``bin_counts`` (n numbers each) and
        ``bin_edges`` (n + 1); as ``log_confusion_matrix`` otherwise."""
        self._log_typed("predictions", name, value, description)

    def _log_typed(self, schema_type: str, name: str, value: object, description: str) -> None:
        """A typed metric: the canonical JSON as artifact ``name`` with ``metric`` set.
        Logging a name again replaces it (azureml-core keeps the first)."""
        check_name(name, "metric name")
        check_artifact_name(name)
        _check_description(description)
        data = typed_metric_json(schema_type, name, value)
        self._put_artifact(name, "FILE", BytesIO(data), CONTENT_TYPE, metric=schema_type)

    def upload_file(
        self,
        name: str,
        path_or_stream: str | os.PathLike[str] | BinaryIO,
        datastore_name: str | None = None,
    ) -> None:
        """Upload a file (path or binary stream) as artifact ``name``, e.g. 'outputs/model.pkl'.

        The bytes are copied aside (and hashed) now; they reach the API in the background.
        ``datastore_name`` must be None: artifacts live in the API's blob store.
        """
        _no_datastore(datastore_name)
        check_artifact_name(name)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._put_artifact(name, "FILE", path_or_stream, content_type)

    def upload_files(
        self,
        names: Iterable[str],
        paths: Iterable[str | os.PathLike[str]],
        return_artifacts: bool = False,
        timeout_seconds: float | None = None,
        datastore_name: str | None = None,
    ) -> None:
        """``upload_file`` for each (name, path) pair (equally many of each); every name
        and file is checked before the first is uploaded. ``return_artifacts`` and
        ``timeout_seconds`` are accepted as in Azure ML: uploads finish in the background."""
        _no_datastore(datastore_name)
        named, located = list(names), [Path(p) for p in paths]
        if len(named) != len(located):
            raise ValueError(f"upload_files: {len(named)} names for {len(located)} paths")
        if len(set(named)) != len(named):
            raise ValueError("upload_files: names must be distinct")
        for name, path in zip(named, located, strict=True):
            check_artifact_name(name)
            if not path.is_file():
                raise ValueError(f"no such file: {str(path)!r}")
        for name, path in zip(named, located, strict=True):
            self.upload_file(name, path)

    def upload_folder(
        self, name: str, path: str | os.PathLike[str], datastore_name: str | None = None
    ) -> None:
        """Upload every file under folder ``path`` as ``<name>/<its relative path>``."""
        _no_datastore(datastore_name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"no such folder: {str(root)!r}")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        prefix = name.rstrip("/")
        self.upload_files([f"{prefix}/{p.relative_to(root).as_posix()}" for p in files], files)

    def set_tags(self, tags: Mapping[str, object] | Iterable[str]) -> None:
        """Tag the run with every ``{key: value}`` (or every key of a list, without value)."""
        items = list(tags.items()) if isinstance(tags, Mapping) else [(k, None) for k in tags]
        for key, value in items:
            check_name(key, "tag key")
            check_tag_value(value)
        for key, value in items:
            self.tag(key, value)

    def _put_artifact(
        self,
        name: str,
        kind: str,
        source: str | os.PathLike[str] | BinaryIO,
        content_type: str,
        metric: str | None = None,
    ) -> None:
        sender = self._open_sender(f"file {name!r}")
        try:
            if isinstance(source, str | os.PathLike):
                path = Path(source)
                if not path.is_file():
                    raise ValueError(f"no such file: {str(path)!r}")
                with path.open("rb") as f:
                    sha256, size = sender.stage_blob(f)
            elif callable(getattr(source, "read", None)):
                sha256, size = sender.stage_blob(source)
            else:
                raise TypeError(f"expected a path or a binary stream, not {type(source).__name__}")
        except SpoolError as exc:
            logger.warning("cannot keep the bytes of artifact %r: %s", name, exc)
            self._buffer.count_drop(self._stream)
            return
        record = {
            "name": name,
            "kind": kind,
            "sha256": sha256,
            "size_bytes": size,
            "content_type": content_type,
        }
        if metric is not None:  # schema v2: a typed metric (log_confusion_matrix and co.)
            record["metric"] = metric
        if self._enqueue("Artifact", record):
            sender.submit_blob(sha256)
            self._uploaded.add(name)

    def _closed_error(self, what: str = "logging") -> RunClosedError:
        if self._sender is None:
            return ReadOnlyRunError(self.id)
        if self._final_status is not None:
            return RunEndedError(self.id, self._final_status, what)
        return RunClosedError(self.id)

    def _refuse_if_ended(self, what: str) -> None:
        """A handle that ended its run takes nothing more (``RunEndedError``)."""
        status = self._final_status
        if status is not None:
            raise RunEndedError(self.id, status, what)

    def _edit(self, target: str, key: str, value: str | None, value_type: str = "str") -> None:
        """Send a metadata edit (schema v2 ``Tag.target``; v3 ``value_type``: what ``value``
        is the text of): through this handle's stream while it is open, else through the
        edit stream (see the module docstring); never through a handle that ended the run."""
        self._refuse_if_ended(f"{'tag' if target in ('tag', 'untag') else target} {key!r}")
        record = {"key": key, "value": value, "target": target, "value_type": value_type}
        if self._sender is not None:
            try:
                self._enqueue("Tag", record)
                return
            except RunClosedError:
                pass  # ended or closed since: the edit stream carries it
        self._edit_handle()._enqueue("Tag", record)

    def _edit_handle(self) -> RunHandle:
        with self._lock:
            if self._editor is None or self._editor._released:
                stream = Stream(
                    run_id=self.id,
                    experiment=self._experiment.name,
                    workspace=self._stream.workspace,
                    producer_id=uuid.uuid4().hex,
                    rank=self._stream.rank,
                )
                self._editor = RunHandle(
                    experiment=self._experiment,
                    session=self._session,
                    stream=stream,
                    sender=self._session.open_stream(stream),
                    parent=None,
                    world_size=1,
                    display_name=None,
                    compute_target=None,
                    properties={},
                    outputs_dir=None,
                )
            return self._editor

    def _open_sender(self, what: str = "logging") -> Sender:
        """The sender, for a handle that may still log; raises otherwise."""
        if self._sender is None or self._stream.closed:
            raise self._closed_error(what)
        return self._sender

    @property
    def _writes_here(self) -> bool:
        return self._sender is not None

    def _enqueue(self, kind: str, record: dict[str, Any]) -> bool:
        """Check the encoded size now (raises ValueError), then enqueue; False if dropped."""
        if self._sender is None:
            raise ReadOnlyRunError(self.id)
        event = PendingEvent(kind, record, new_event_id(), time_ns() // 1000)
        probe = event_dict(
            self._stream,
            seq=INT64_MAX,  # the widest seq varint: the real event is never bigger
            event_id=event.event_id,
            ts_us=event.ts_us,
            kind=kind,
            record=record,
        )
        try:
            cost = len(self._codec.encode(probe))
        except MessageTooLargeError as exc:
            raise ValueError(_too_large(kind, record, exc)) from exc
        try:
            return self._buffer.put_event(self._stream, event, cost)
        except RunClosedError:
            raise self._closed_error() from None

    def log_output(self, stream: str, lines: Iterable[str]) -> None:
        """Record lines of output (without their newlines) as the run's log lines of
        ``stream`` (``stdout``, ``stderr`` or another name): what ``capture_output`` does
        for this process, for a launcher or agent that captures a child process.
        Non-blocking; invalid Unicode is replaced, long batches are split to fit."""
        check_name(stream, "log stream")
        batch: list[str] = []
        size = 0
        for line in lines:
            text = valid_text(str(line))
            if batch and size + len(text) > self._max_text_bytes // 4:
                self._log_lines(stream, batch)
                batch, size = [], 0
            batch.append(text[: self._max_text_bytes // 4])
            size += len(batch[-1])
        if batch:
            self._log_lines(stream, batch)

    def set_status(self, status: str) -> None:
        """Report a status on the way: ``Queued``, ``Preparing``, ``Running``,
        ``Finalizing`` or ``CancelRequested`` — for a launcher or agent driving a
        submitted run; the end is ``complete``/``fail``/``cancel``."""
        if status not in _PROGRESS_STATUSES:
            raise ValueError(
                f"set_status takes one of {', '.join(_PROGRESS_STATUSES)}, not {status!r}; "
                "end a run with complete(), fail() or cancel()"
            )
        self._open_sender("set_status()")
        self._lifecycle(status)

    def _log_lines(self, stream_name: str, lines: list[str]) -> None:
        """Captured output (see ``_capture``); never raises into ``print``."""
        try:
            self._enqueue("LogLines", {"stream": stream_name, "lines": lines})
        except (ValueError, RunClosedError):
            self._buffer.count_drop(self._stream)

    # ---- status ----------------------------------------------------------------------

    def _lifecycle(self, status: str, *, error: str | None = None, metadata: bool = False) -> None:
        self._known_status = status
        self._session.sent_status(self.id, status)
        record: dict[str, Any] = {
            "status": status,
            "parent_run_id": None,
            "display_name": None,
            "compute_target": None,
            "error": error,
            "properties": {},
            "attempt": self._attempt,
            "property_types": {},
        }
        if metadata:
            record["parent_run_id"] = self._parent.id if self._parent is not None else None
            record["display_name"] = self._display_name
            record["compute_target"] = self._compute_target
            texts = {key: wire_text(value) for key, value in self._properties.items()}
            record["properties"] = {key: text for key, (text, _) in texts.items()}
            record["property_types"] = {k: kind for k, (_, kind) in texts.items() if kind != "str"}
        self._enqueue("Lifecycle", record)

    def _start(self, statuses: tuple[str, ...], capture_output: bool) -> None:
        for status in statuses:
            self._lifecycle(status, metadata=True)
        self._stream.heartbeat = True
        if capture_output:
            self._capture = OutputCapture(self._log_lines)
            self._capture.start()

    def _finishing(self, status: str) -> bool:
        """Claim the terminal transition; False if the run already ended."""
        if self._sender is None:
            raise ReadOnlyRunError(self.id)
        with self._lock:
            if self._final_status is not None:
                return False
            if self._stream.closed:
                raise self._closed_error(status.lower())
            self._final_status = status
        self._stream.heartbeat = False
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
        return True

    def complete(self) -> None:
        """Mark the run Completed (after Finalizing and capturing ./outputs). From then on
        this handle takes nothing more (``RunEndedError``). Completing a run this handle
        already completed does nothing; one it failed or canceled raises."""
        self._complete(raises=True)

    def _complete(self, *, raises: bool = False) -> None:
        if not self._finishing("Completed"):
            if raises and self._final_status != "Completed":
                raise self._closed_error("complete()")
            return
        self._lifecycle("Finalizing")
        self._capture_outputs()
        self._lifecycle("Completed")
        self._ended()

    def _ended(self) -> None:
        """After the terminal status is enqueued: refuse everything from now on."""
        with self._buffer.lock:
            self._stream.closed = True
        disown(self)

    def own_until_exit(self) -> None:
        """This process started the run for itself: end it if the process ends first
        (``_exit.py``)."""
        self.owner_pid = os.getpid()
        own(self)

    def end_with_process(self, status: str, error: str) -> None:
        """The process is ending with the run open (``_exit.py``): Failed or Canceled with
        ``error`` as the reason; nothing if the run ended meanwhile."""
        with self._lock:
            if self._final_status is not None or self._stream.closed:
                return
        if status == "Canceled":
            self._cancel(error)
        else:
            self._fail(error)

    def fail(self, error: BaseException | str | None = None) -> None:
        """Mark the run Failed, recording ``error`` (an exception's traceback or a message).
        A run this handle already ended raises ``RunEndedError`` (its status stays)."""
        self._fail(error, raises=True)

    def _fail(self, error: BaseException | str | None, *, raises: bool = False) -> None:
        if not self._finishing("Failed"):
            if raises:
                raise self._closed_error("fail()")
            return
        text: str | None
        if isinstance(error, BaseException):
            text = "".join(traceback.format_exception(error))
        else:
            text = error
        if text is not None and len(text) > MAX_ERROR_CHARS:
            text = "…" + text[-MAX_ERROR_CHARS:]
        if text is not None:
            text = valid_text(text)
        self._lifecycle("Failed", error=text)
        self._ended()

    def cancel(self) -> None:
        """Mark the run Canceled (nothing if this handle already ended it)."""
        self._cancel(None)

    def _cancel(self, reason: str | None) -> None:
        if self._finishing("Canceled"):
            self._lifecycle("Canceled", error=reason)
            self._ended()

    def _capture_outputs(self) -> None:
        root = self._outputs_dir
        if root is None or not root.is_dir():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = "outputs/" + path.relative_to(root).as_posix()
            if name in self._uploaded:
                continue
            try:
                self.upload_file(name, path)
            except (OSError, ValueError) as exc:
                logger.warning("not capturing %s: %s", path, exc)

    def flush(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Wait until everything logged so far is acknowledged; ``ProducerTimeoutError`` if not."""
        editor = self._editor
        sender = self._sender or (editor._sender if editor is not None else None)
        if sender is not None:
            sender.flush(timeout_s)

    def close(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """End this handle: no more logging; waits up to ``timeout_s`` for delivery.

        Nothing is discarded: what is not delivered in time stays queued (other runs of
        the workspace are open) or is spooled for ``runstream sync`` (this was the last).
        Does not change the run's status: a run closed without ``complete()`` is left to
        its other producers, and is not ended when this process exits (with no producer
        left, the worker fails it after ``fail_after_no_heartbeat``).
        """
        if self._editor is not None:
            self._editor.close(timeout_s)
        with self._buffer.lock:
            if self._released or self._sender is None:
                return
            self._released = True
            self._stream.closed = True
        disown(self)  # closed without ending: its end is its other producers' (or the worker's)
        self._stream.heartbeat = False
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
        self._session.release(self._stream, timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream.closed:
            return
        # Never raising here (the run may have been ended meanwhile: by SIGTERM's handler).
        if exc is None:
            self._complete()
        elif isinstance(exc, KeyboardInterrupt):
            self._cancel(INTERRUPTED)
        elif isinstance(exc, SystemExit) and terminated_by_signal():
            self._cancel(TERMINATED)  # a SIGTERM handler of the program's own exited
        else:
            self._fail(exc)


#: What ``set_status`` reports (the terminal ones have their own methods).
_PROGRESS_STATUSES = ("Queued", "Preparing", "Running", "Finalizing", "CancelRequested")


def _no_wake() -> None:
    pass


def _no_datastore(datastore_name: object) -> None:
    if datastore_name is not None:
        raise ValueError("datastore_name must be None: artifacts live in the API's blob store")


def _check_description(description: object) -> None:
    """Azure ML's ``description`` arguments: accepted, not stored; must be text."""
    if description.__class__ is not str:
        raise TypeError(f"description must be a str, not {type(description).__name__}")


#: Label and what to do instead, by kind of event, when one call does not fit in a message.
_TOO_LARGE = {
    "ListValue": ("list", "split it over several log_list calls of one name (they append)"),
    "Table": ("table", "split the rows over several log_table calls of one name (they append)"),
    "Row": ("row", "shorten its text values"),
}


def _too_large(kind: str, record: Mapping[str, Any], exc: MessageTooLargeError) -> str:
    what, advice = _TOO_LARGE.get(kind, (kind, "make it smaller"))
    name = record.get("name", record.get("key"))
    label = f"{what} {name!r}" if isinstance(name, str) else what
    return (
        f"{label} is {exc.size_bytes} bytes encoded, over the {exc.max_message_bytes}-byte "
        f"limit of one message; {advice}, or upload the data as a file (run.upload_file)"
    )
