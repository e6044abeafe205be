"""Every run a process starts ends when the process does.

A run this process started for itself — ``Experiment.start_logging``, ``Run.child_run``,
``Run.get_context()`` outside a launcher — is *owned* by it (``own``). When the process
ends with such a run still open:

- the interpreter exits (the script's end, ``sys.exit``, an uncaught exception): the run
  ends **Failed**, "process exited without complete()" (an uncaught exception's traceback
  follows); an uncaught ``KeyboardInterrupt`` (Ctrl-C outside a ``with`` block) ends it
  **Canceled**, "KeyboardInterrupt (Ctrl-C)". ``close_all_at_exit`` (``_sender.py``) calls
  ``end_owned_runs_at_exit`` before it closes the senders, so those last events are sent;
- SIGTERM: the handler installed with the first owned run lets the signal do what it
  did before. With the default action, it first ends the runs **Canceled**, "terminated
  by SIGTERM", delivers what it can within ``close_timeout_s``, then terminates the
  process by SIGTERM, exit status and all. A handler the program had installed is called
  instead and decides: if it raises (``sys.exit``), the runs end Canceled, "terminated by
  SIGTERM", as the exception leaves the ``with`` blocks and the interpreter; if it
  returns, the process and its runs go on. A SIGTERM that was ignored stays ignored (no
  handler is installed), and so does a handler installed from C. Only the main thread
  can install it: a run first started from another thread ends at exit, not on SIGTERM;
- SIGKILL, OOM, power loss: nothing runs here; the worker marks the run NotResponding
  after ``not_responding_after`` and Failed after ``fail_after_no_heartbeat`` (30 min).

Runs opened with ``Run.open`` (agents, launchers) and ``Run.get_context()`` under a
launcher (``RUNSTREAM_RUN_ID`` set) are not owned: their launcher reports their end, and
other ranks of the run exit without ending it. fork()ed children own nothing: a child
inherits the parent's handler and exit hooks, but a run is only ended by the process that
started it (its pid), so a data-loader worker or a pool process exiting — or terminated
with SIGTERM — never ends its parent's runs.

The handler never waits for a lock the interrupted main thread holds: a signal that lands
inside an SDK call (the middle of ``log``, which holds the buffer's lock) is sent again a
few milliseconds later, once that call has returned; then the runs are ended by a helper
thread while the handler waits for it (bounded).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._errors import ProducerError

if TYPE_CHECKING:
    from ._run import RunHandle

__all__ = [
    "EXITED",
    "INTERRUPTED",
    "TERMINATED",
    "close_senders_with",
    "disown",
    "end_owned_runs_at_exit",
    "own",
    "terminated_by_signal",
]

#: The error texts of runs ended by their process's end.
EXITED = "process exited without complete()"
INTERRUPTED = "KeyboardInterrupt (Ctrl-C)"
TERMINATED = "terminated by SIGTERM"

#: A signal that lands inside the SDK is sent again after this, at most this many times
#: (a long SDK call, ``flush`` say, holds no lock: then it is handled there).
_RESEND_AFTER_S = 0.002
_MAX_RESENDS = 250
#: The longest the handler waits for the runs' end events to be delivered or spooled.
_MAX_WAIT_S = 60.0

logger = logging.getLogger(__name__)
_lock = threading.Lock()
#: Open runs this process owns, oldest first (children after their parents).
_owned: dict[int, RunHandle] = {}
_previous: Any = None
_installed_pid: int | None = None
#: Set once SIGTERM arrived (so an exit it causes reports it, not "exited").
_terminated = False
_ender: threading.Thread | None = None
_resends = 0
_close_senders: Callable[[], None] | None = None


def own(handle: RunHandle) -> None:
    """``handle`` (open, logging) belongs to this process: it ends when the process does."""
    with _lock:
        _owned[id(handle)] = handle
    _install_sigterm_handler()


def disown(handle: RunHandle) -> None:
    """``handle`` ended or closed."""
    with _lock:
        _owned.pop(id(handle), None)


def terminated_by_signal() -> bool:
    """Whether SIGTERM arrived in this process (and was not ignored)."""
    return _terminated


def _owned_here() -> list[RunHandle]:
    """Taken without the lock (one C-level copy under the GIL): the signal handler may
    run while the interrupted main thread holds it."""
    pid = os.getpid()
    return [h for h in list(_owned.values()) if h.owner_pid == pid]


def _end_all(status: str, error: str) -> None:
    """End every open run this process owns, children first (they were opened later)."""
    for handle in reversed(_owned_here()):
        try:
            handle.end_with_process(status, error)
        except (ProducerError, ValueError) as exc:  # one run never keeps the others open
            logger.warning("runstream: could not end run %s: %s", handle.id, exc)


def end_owned_runs_at_exit() -> None:
    """At interpreter exit (before the senders close): end what is still open."""
    if not _owned_here():
        return
    if _terminated:
        _end_all("Canceled", TERMINATED)
        return
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if isinstance(last, KeyboardInterrupt):
        _end_all("Canceled", INTERRUPTED)
    elif isinstance(last, BaseException) and not isinstance(last, SystemExit):
        text = "".join(traceback.format_exception(last))
        _end_all("Failed", f"{EXITED}; it raised:\n{text}")
    else:
        _end_all("Failed", EXITED)


# ---- SIGTERM ----------------------------------------------------------------------------


def _install_sigterm_handler() -> None:
    global _previous, _installed_pid
    pid = os.getpid()
    if _installed_pid == pid or threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is None or current == signal.SIG_IGN or current is _on_sigterm:
            _installed_pid = pid  # ignored, or a C handler: leave it as it is
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _previous = current
    _installed_pid = pid


def close_senders_with(close: Callable[[], None]) -> None:
    """How the SIGTERM handler delivers before the process goes (``_sender.py`` gives its
    ``close_all_at_exit``: this module imports no other of the SDK's)."""
    global _close_senders
    _close_senders = close


def _end_and_close() -> None:
    _end_all("Canceled", TERMINATED)
    if _close_senders is not None:
        _close_senders()


def _inside_sdk(frame: FrameType | None) -> bool:
    """Whether the interrupted main thread is inside the SDK (then it may hold one of its
    locks: every lock the SDK takes is released before it returns to its caller)."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("producer."):
            return True
        frame = frame.f_back
    return False


def _ended_in_time(signum: int, frame: FrameType | None) -> bool:
    """End the owned runs and close the senders (a helper thread, once), waiting for it;
    False when the signal landed inside the SDK: then it is sent again a moment later,
    once the interrupted call has returned (a few times at most)."""
    global _ender, _resends
    if _ender is None:
        if not _owned_here():
            return True
        if _inside_sdk(frame) and _resends < _MAX_RESENDS:
            _resends += 1
            timer = threading.Timer(_RESEND_AFTER_S, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return False
        _ender = threading.Thread(target=_end_and_close, name="runstream-sigterm", daemon=True)
        _ender.start()
    _ender.join(_MAX_WAIT_S)  # the senders' close is bounded by their close_timeout_s
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    _terminated = True
    previous = _previous
    if callable(previous):
        # The program's own handler decides. If it raises (sys.exit), the exception leaves
        # through the ``with`` blocks and the interpreter's exit, which end the runs
        # Canceled (``terminated_by_signal``); if it returns, the process and its runs go on.
        previous(signum, frame)
        return
    if not _ended_in_time(signum, frame):
        return  # back in a moment (the re-sent signal)
    # As if this handler had never been installed: the default action, by the signal.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1.0)  # the signal is delivered at once unless blocked; then exit anyway
    os._exit(128 + signum)


def _after_fork_in_child() -> None:
    global _lock, _ender, _resends
    _lock = threading.Lock()
    _owned.clear()
    _ender = None
    _resends = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
