"""The agent's side of the lease rule (jobs contract): a run must never execute twice at
the same time, so an agent that cannot renew its leases stops its runs before the
server may hand them to someone else.

The server renews a lease when a poll reaches it: ``lease_expires_at = now + lease_s``.
The agent knows a renewal happened only when the answer comes back, and the renewal
happened no earlier than the poll was *sent*. So the agent counts from the send time of
its last successful poll, and once ``KILL_FRACTION`` (2/3) of ``lease_s`` has passed
without another, it kills (SIGKILL) every run it holds and reports nothing: the server
expires the lease ``lease_s`` after the renewal, a third of ``lease_s`` later at the
earliest, and only then retries the run elsewhere.

Polls wait at most ``POLL_FRACTION`` (1/4) of ``lease_s`` on the server, so two
successive long-polls fit within the kill bound with room for latency, and a poll
that a freed slot would cancel is left to finish once the last success is older than
``CANCEL_FRACTION`` (1/3) of ``lease_s`` (a cancelled poll proves nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CANCEL_FRACTION", "KILL_FRACTION", "POLL_FRACTION", "LeaseGuard"]

KILL_FRACTION = 2 / 3
POLL_FRACTION = 1 / 4
CANCEL_FRACTION = 1 / 3


class LeaseGuard:
    """When the runs an agent holds must be killed: ``renewed(sent_at)`` after each
    successful poll (with its send time on ``clock``), ``expired()`` when they must die.
    ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(self, lease_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, not {lease_s!r}")
        self.lease_s = lease_s
        self._clock = clock
        self._last_ok_sent = clock()

    @property
    def kill_after_s(self) -> float:
        return self.lease_s * KILL_FRACTION

    @property
    def poll_wait_s(self) -> float:
        """How long a poll may wait on the server: two of them fit in ``kill_after_s``."""
        return self.lease_s * POLL_FRACTION

    def set_lease(self, lease_s: float) -> None:
        """The server's ``lease_s`` (every poll answer repeats it)."""
        if lease_s > 0:
            self.lease_s = lease_s

    def renewed(self, sent_at: float) -> None:
        """A poll sent at ``sent_at`` succeeded: the leases were renewed no earlier."""
        self._last_ok_sent = max(self._last_ok_sent, sent_at)

    def reset(self) -> None:
        """Start counting afresh (after registering: nothing is held yet)."""
        self._last_ok_sent = self._clock()

    def age(self) -> float:
        """Seconds since the send time of the last successful poll."""
        return self._clock() - self._last_ok_sent

    def deadline(self) -> float:
        """The ``clock`` time at which held runs must be killed."""
        return self._last_ok_sent + self.kill_after_s

    def expired(self) -> bool:
        return self._clock() >= self.deadline()

    def may_cancel_poll(self) -> bool:
        """Whether an outstanding poll may be cancelled for a new one (see the module)."""
        return self.age() < self.lease_s * CANCEL_FRACTION
