"""Failover: a process that stopped beating has its rooms placed again, each on the least-loaded live process
that can take its scenario (``Directory.reassign``: atomic, so several join services running this loop move
each room once). The chosen process finds the order in its inbox at its next beat and resumes the room from
the dead process's checkpoint (``rehearsal.fleet.member``); the clients, whose codes now route there, rejoin.
A room no process can take now waits for the next round. A dead process with no rooms left is forgotten.
Runs on its own thread, never on the reactor.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from rehearsal.fleet.directory import Directory

log = logging.getLogger("rehearsal.fleet.failover")

INTERVAL_SECONDS = 0.25


class FailoverLoop:
    """Every ``interval``: find dead processes, reassign their rooms (see the module doc). ``counters``."""

    def __init__(self, directory: Directory, interval: float = INTERVAL_SECONDS) -> None:
        self.directory = directory
        self.interval = interval
        self.counters: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round; returns how many rooms were reassigned (Redis errors: counted, 0)."""
        moved = 0
        try:
            for process, rooms in self.directory.dead_processes().items():
                for session in sorted(rooms):
                    order = self.directory.reassign(session, process)
                    if order is None:
                        self.counters["waiting"] += 1
                        continue
                    moved += 1
                    self.counters["reassigned"] += 1
                    log.info("fleet: %s was on %s (no heartbeat): placed again", session, process)
                if not rooms and self.directory.forget(process):
                    self.counters["forgotten"] += 1
        except Exception as exc:  # (Redis down: the next round tries again)
            self.counters["failed"] += 1
            log.debug("fleet: failover round failed: %s", type(exc).__name__)
        return moved

    def start(self) -> FailoverLoop:
        self._thread = threading.Thread(target=self._run, name="fleet-failover", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()
