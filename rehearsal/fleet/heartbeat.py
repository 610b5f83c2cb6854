"""A game-server process's heartbeat: on its own thread, so a Redis that is slow or down never blocks a tick.

The reactor hands over what it knows (``offer``: the latest ``Beat``; ``room_closed``; ``codes_added``) and
never waits; this thread writes it to the directory every ``interval`` (one Lua call), then takes the
adoption orders waiting in the process's inbox and hands them back (``on_orders``, called on this thread: the
caller bounces them to the reactor). When a beat fails the queued changes are kept (bounded) and the next
beat that succeeds after an outage, or finds the directory had forgotten the process (a Redis restarted
without its data), republishes every join code from ``all_codes()`` (read from the session store), so nothing
is lost: rooms, owners and codes are all back one beat after Redis is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from rehearsal.fleet.directory import Beat, CodeRoute, Directory, Order

log = logging.getLogger("rehearsal.fleet.heartbeat")

INTERVAL_SECONDS = 0.5
MAX_QUEUED = 100_000  # codes or closed rooms held while Redis is down; beyond, a full resync covers them


class HeartbeatThread:
    """Beats for one process (see the module doc). ``stats``: beats, failures, resyncs, connected."""

    def __init__(
        self,
        directory: Directory,
        *,
        interval: float = INTERVAL_SECONDS,
        on_orders: Callable[[list[Order]], None] = lambda orders: None,
        on_lost: Callable[[Sequence[str]], None] = lambda rooms: None,
        all_codes: Callable[[], list[CodeRoute]] = list,
        deregister_on_stop: bool = True,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.on_orders = on_orders
        self.on_lost = on_lost
        self.all_codes = all_codes
        self.deregister_on_stop = deregister_on_stop
        self._lock = threading.Lock()
        self._beat: Beat | None = None
        self._closed: set[str] = set()
        self._codes: deque[CodeRoute] = deque()
        self._overflow = False
        self._resync = True  # the first beat publishes every code the store holds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"beats": 0, "failures": 0, "resyncs": 0, "orders": 0, "connected": False}
        self.last_ok = 0.0  # monotonic time of the last beat that reached the directory

    # --- from the reactor (never blocks) -----------------------------------------------------------------

    def offer(self, beat: Beat) -> None:
        with self._lock:
            self._beat = beat

    def room_closed(self, session: str) -> None:
        with self._lock:
            if len(self._closed) < MAX_QUEUED:
                self._closed.add(session)

    def codes_added(self, routes: Sequence[CodeRoute]) -> None:
        with self._lock:
            if len(self._codes) + len(routes) > MAX_QUEUED:
                self._overflow = True  # a resync will read them all from the store
                return
            self._codes.extend(routes)

    def beat_now(self) -> None:
        """Beat at once instead of at the next interval (a room opened or closed)."""
        self._wake.set()

    # --- the thread --------------------------------------------------------------------------------------

    def start(self) -> HeartbeatThread:
        self._thread = threading.Thread(target=self._run, name="fleet-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating; with ``deregister_on_stop`` the process leaves the directory (a clean stop)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.deregister_on_stop and self._beat is not None:
            try:
                self.directory.deregister(self._beat.info.process)
            except Exception as exc:  # (a Redis that is down: the TTL does it)
                log.warning("fleet: could not deregister (%s): the heartbeat's TTL will", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.beat_once()
            self._wake.wait(max(self.interval - (time.monotonic() - started), 0.0))
            self._wake.clear()

    def beat_once(self) -> bool:
        """One beat (the thread's loop; tests call it directly). True when it reached the directory."""
        with self._lock:
            beat, closed, codes = self._beat, set(self._closed), list(self._codes)
            queued = len(codes)  # those are in the session store already: a resync reads them too
            resync = self._resync or self._overflow
        if beat is None:
            return False
        try:
            result = self.directory.beat(beat, closed)
            if result.fresh or resync:
                codes = self.all_codes() + codes  # the store's, and those queued (in case a read missed them)
                self.stats["resyncs"] += 1
            self.directory.publish_codes(codes)
            orders = self.directory.take_orders(beat.info.process)
        except Exception as exc:  # (Redis down, timing out, restarting: try again next beat)
            self.stats["failures"] += 1
            if self.stats["connected"]:
                log.warning("fleet: the directory is unreachable (%s): rooms go on, retrying", type(exc).__name__)
            self.stats["connected"] = False
            with self._lock:
                self._resync = True
            return False
        with self._lock:
            self._closed -= closed
            for _ in range(min(queued, len(self._codes))):
                self._codes.popleft()
            if resync:
                self._overflow = False
            self._resync = False
        if not self.stats["connected"]:
            log.info("fleet: registered in the directory as %s", beat.info.process)
        self.stats["connected"] = True
        self.stats["beats"] += 1
        self.last_ok = time.monotonic()
        if result.lost:
            self.on_lost(result.lost)
        if orders:
            self.stats["orders"] += len(orders)
            self.on_orders(orders)
        return True
