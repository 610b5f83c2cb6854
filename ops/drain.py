"""Graceful drain (SIGTERM): announce a deadline, end rooms when they empty or at the deadline, then finish.

The app hands in what to do with its rooms as plain callables; the ``Drain`` only keeps time:

1. ``start()`` calls ``announce(deadline)`` once (the app tells every participant, reliably, and stops
   taking new sessions and joins; ``/readyz`` should already answer 503 ``draining``).
2. Every ``poll`` seconds: rooms that are ``empty(session)`` end at once (``end(session)``, called once
   per room); at the deadline every room that is left ends.
3. The Deferred from ``start()`` fires (with the number of rooms ended at the deadline) once ``rooms()``
   is empty (the app frees a room a moment after it ended), or at ``deadline + grace`` at the latest,
   whatever the app is still doing: the process must exit within a bounded time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

__all__ = ["Drain"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
GRACE_SECONDS = 3.0  # after the deadline, for the rooms' last messages ("ended") and their teardown


class Drain:
    """One drain of one process (see the module doc). Every wait is bounded by ``deadline + grace``."""

    def __init__(
        self,
        clock: IReactorTime,
        seconds: float,
        *,
        rooms: Callable[[], Iterable[str]],
        empty: Callable[[str], bool],
        end: Callable[[str], None],
        announce: Callable[[float], None],
        poll: float = POLL_SECONDS,
        grace: float = GRACE_SECONDS,
    ) -> None:
        if seconds < 0:
            raise ValueError("drain seconds must be >= 0")
        self.clock = clock
        self.seconds = seconds
        self.rooms = rooms
        self.empty = empty
        self.end = end
        self.announce = announce
        self.poll = poll
        self.grace = grace
        self.deadline: float | None = None
        self.ended_at_deadline = 0
        self.ended_empty = 0
        self._ended: set[str] = set()  # end() once per room; the app frees it a moment later
        self._done: defer.Deferred | None = None
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.called

    def start(self) -> defer.Deferred:
        """Begin (once; later calls return the same Deferred)."""
        if self._done is not None:
            return self._done
        self._done = defer.Deferred()
        self.deadline = self.clock.seconds() + self.seconds
        try:
            self.announce(self.deadline)
        except Exception as exc:  # a failed notice must not keep the process from draining
            log.error("drain: announcing failed: %s", type(exc).__name__)
        log.info("draining: %d rooms, deadline in %.1f s", len(list(self.rooms())), self.seconds)
        self._loop.start(self.poll, now=True).addErrback(self._failed)
        return self._done

    def _failed(self, failure) -> None:
        log.error("drain: check failed: %s", failure.type.__name__)
        self._finish()

    def _check(self) -> None:
        assert self.deadline is not None
        now = self.clock.seconds()
        sessions = list(self.rooms())
        if not sessions or now >= self.deadline + self.grace:
            if sessions:
                log.warning("drain: %d rooms still open after the grace period; stopping anyway", len(sessions))
            self._finish()
            return
        past_deadline = now >= self.deadline
        for session in sessions:
            if session in self._ended:
                continue
            try:
                if past_deadline:
                    self._ended.add(session)
                    self.end(session)
                    self.ended_at_deadline += 1
                elif self.empty(session):
                    self._ended.add(session)
                    self.end(session)
                    self.ended_empty += 1
            except Exception as exc:  # one room's failure must not stop the others from ending
                log.error("drain: ending room %s failed: %s", session, type(exc).__name__)

    def _finish(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._done is not None and not self._done.called:
            log.info("drained: %d rooms ended empty, %d at the deadline", self.ended_empty, self.ended_at_deadline)
            self._done.callback(self.ended_at_deadline)
