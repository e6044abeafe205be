"""``RunDetails``: a run in a notebook, live until it ends (``azureml.widgets.RunDetails``).

The widget is an anywidget: its front end is ``_widget.js`` and ``_widget.css``, shipped
in this package and sent to the notebook with the widget (no CDN, no lab extension), and
its state is plain traitlets that the front end draws and a test can read. What it reads
and how it follows the run is ``_feed.RunFeed``; this module only binds its state to
traitlets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anywidget
import traitlets

from .._follow import TERMINAL_STATUSES
from ._feed import RunFeed

if TYPE_CHECKING:
    from .._workspace import Run

__all__ = ["RunDetails"]

_HERE = Path(__file__).parent


def _asset(name: str) -> str:
    # The text, not the Path: given a Path, anywidget watches the file on a thread of its own.
    return (_HERE / name).read_text(encoding="utf-8")


class RunDetails(anywidget.AnyWidget):
    """A run's status, times, metrics, log tail and child runs, live until it ends.

    ``RunDetails(run)`` reads the run once (a run this process logs into is first flushed
    and waited for, as by ``run.get_details()``). If the run has ended that is all: no
    thread, no connection. Otherwise two daemon threads (``runstream-widget…``) follow
    its event stream and update the traitlets below within moments of each change, until
    the run is Completed, Failed or Canceled (then ``live`` turns False and the threads
    and the connection are gone) or ``close()`` is called. Works for any run handle: one
    from ``start_logging``, ``experiment.submit``, ``Run(experiment, run_id)``…

    ``show()`` displays it (as ``azureml.widgets.RunDetails(run).show()``); so does
    leaving it as a cell's last expression. As a context manager it is closed on exit.
    """

    _esm = _asset("_widget.js")
    _css = _asset("_widget.css")

    run_id = traitlets.Unicode("").tag(sync=True)
    experiment = traitlets.Unicode("").tag(sync=True)
    display_name = traitlets.Unicode("").tag(sync=True)
    #: NotStarted, Queued, Preparing, Running, NotResponding, Finalizing, CancelRequested,
    #: Completed, Failed or Canceled.
    status = traitlets.Unicode("").tag(sync=True)
    #: The run's error text (a Failed run's traceback, why a Canceled one was canceled), or "".
    error = traitlets.Unicode("").tag(sync=True)
    #: created_at, queued_at, started_at, ended_at (ISO 8601), status_times {status: time},
    #: duration_s (start to end; None while running), queued_s.
    times = traitlets.Dict().tag(sync=True)
    #: {name: {kind: series|value|list|table|typed, count, last, min, max, columns, and
    #: for a charted series steps, values (lo, hi when downsampled), downsampled}}.
    metrics = traitlets.Dict().tag(sync=True)
    #: The last lines of the run's log, oldest first (other ranks and stderr marked).
    log_tail = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: [{run_id, display_name, status, created_at, started_at, ended_at, duration_s,
    #: portal_url}] (the first 100), and how many children the run has.
    children = traitlets.List(traitlets.Dict()).tag(sync=True)
    children_total = traitlets.Int(0).tag(sync=True)
    #: The run's page in the studio (``run.get_portal_url()``).
    portal_url = traitlets.Unicode("").tag(sync=True)
    #: True while the widget follows the run.
    live = traitlets.Bool(False).tag(sync=True)
    #: What keeps it from following, if anything ("reconnecting …").
    notice = traitlets.Unicode("").tag(sync=True)

    def __init__(self, run: Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closed = False
        details = run.get_details()  # flushes this process's events to the run, and waits
        self._feed = RunFeed(run._session.api, run.id, details, publish=self._show_state)
        self._feed.read_all()
        self._show_state(self._feed.state())
        if details.get("status") not in TERMINAL_STATUSES:
            self._feed.start()

    def __repr__(self) -> str:
        return f"RunDetails(run_id={self.run_id!r}, status={self.status!r}, live={self.live})"

    def _show_state(self, state: Mapping[str, Any]) -> None:
        if self._closed:
            return  # closed: the state stays as it was
        with self.hold_sync():
            for name, value in state.items():
                if getattr(self, name) != value:
                    setattr(self, name, value)

    def show(self, render_lib: object = None, widget_settings: object = None) -> None:
        """Display the widget in the notebook (``IPython.display``). ``render_lib`` and
        ``widget_settings`` are accepted as in ``azureml.widgets`` and unused."""
        # Through the module: IPython's display() has no annotations (strict mypy).
        display: Callable[[object], object] = importlib.import_module("IPython.display").display
        display(self)

    def close(self) -> None:
        """Stop following (the threads end and the stream's connection is closed, waited
        for) and close the widget's views."""
        self._closed = True
        feed: RunFeed | None = getattr(self, "_feed", None)  # None: __init__ failed early
        if feed is not None:
            feed.close()
        if self.live:
            self.live = False
        super().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
