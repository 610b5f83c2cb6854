"""A game-server process as a member of the fleet: registered in the room directory, adopting dead processes' rooms.

``prepare(server)`` (before ``server.start``): the invite book's store also publishes each code's route
(``code_routes``), and at start the process resumes only the sessions the directory does not say another
process has taken. ``attach(server)`` (after it listens): a ``LoopingCall`` on the reactor describes the
process (its rooms, draining, healthy) to the ``HeartbeatThread`` every beat, which writes it to Redis off
the reactor; closed rooms leave the directory. Adoption orders (failover: a dead process's room given to
this one) come back to the reactor, which resumes the room from the checkpoint and journal the dead process
left in its data folder (``Sessions.adopt_session``), takes over its codes (this store and book), and clears
them from the old folder. With ``agones`` the process also follows the Agones lifecycle (``agones``).

Folders: every process's ``data_dir`` must be readable by the others (one box: subfolders of one fleet
folder; FLEET.md), and all share the token key (so their connect tokens, code digests and checkpoint
signatures agree): ``REHEARSAL_TOKEN_KEY`` and ``REHEARSAL_ADMIN_CREDENTIAL`` in the environment.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall

from rehearsal.checkpoints import checkpoint_path
from rehearsal.fleet.agones import AgonesLifecycle
from rehearsal.fleet.code_routes import PublishingCodeStore, stored_codes
from rehearsal.fleet.directory import Beat, Directory, Order, ProcessInfo
from rehearsal.fleet.heartbeat import INTERVAL_SECONDS, HeartbeatThread
from rehearsal.journal import JOURNAL_FILE, ActionJournal
from rehearsal.session_store import SESSIONS_FILE, SessionStore

log = logging.getLogger("rehearsal.fleet.member")

DEFAULT_CAPACITY = 2  # rooms of 8 per process on a 2-core box (issue 20's knee)


class FleetMember:
    """One game-server process in the fleet (see the module doc). ``counters``: adopted, adopt_failed, lost."""

    def __init__(
        self,
        directory: Directory,
        process_id: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = INTERVAL_SECONDS,
        agones: AgonesLifecycle | None = None,
        http_url: str = "",
    ) -> None:
        """``http_url``: where the join service reaches this process's join API, when not at its own listening
        address (a pod: ``http://<pod IP>:8080``, ``REHEARSAL_FLEET_HTTP_URL``)."""
        if capacity < 1:
            raise ValueError("a fleet process needs a capacity of at least one room")
        self.directory = directory
        self.process_id = process_id
        self.capacity = capacity
        self.interval = interval
        self.agones = agones
        self.http_url = http_url.rstrip("/")
        self.server: Any = None
        self.info: ProcessInfo | None = None
        self.heartbeat: HeartbeatThread | None = None
        self._loop: LoopingCall | None = None
        self._known: set[str] = set()  # rooms already told to Agones
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"FleetMember({self.process_id!r}, capacity={self.capacity})"

    # --- before start ------------------------------------------------------------------------------------

    def prepare(self, server: Any) -> None:
        """Before ``server.start()``: publish codes through the heartbeat, resume only what is still ours."""
        self.server = server
        self.heartbeat = HeartbeatThread(
            self.directory,
            interval=self.interval,
            on_orders=lambda orders: server.reactor.callFromThread(self._adopt_all, orders),
            on_lost=lambda rooms: server.reactor.callFromThread(self._lost, rooms),
            all_codes=lambda: stored_codes(server.store.path),
        )
        server.invites.store = PublishingCodeStore(server.invites.store, self.heartbeat.codes_added)
        server.keep_session = self._still_ours

    def _still_ours(self, session: str) -> bool:
        """At start: a session the directory gave to another live process is not resumed here (it moved while
        this process was down). A directory that cannot be asked: resume (the heartbeat sorts a conflict out)."""
        try:
            route = self.directory.route(session)
        except Exception as exc:  # (Redis down: the embedded behaviour)
            log.warning("fleet: cannot ask the directory about %s (%s): resuming it", session, type(exc).__name__)
            return True
        keep = route is None or route.process == self.process_id or not route.alive
        if not keep:
            log.info("session %s moved to %s while this process was down: not resumed here", session, route.process)
        return keep

    # --- after start -------------------------------------------------------------------------------------

    def attach(self, server: Any) -> FleetMember:
        """After ``server.start()``: register (the first beat), beat on, and hear adoption orders."""
        if self.server is not server or self.heartbeat is None:
            self.prepare(server)
        settings = server.settings
        self.info = ProcessInfo(
            process=self.process_id,
            udp=settings.public_address,
            http=self.http_url or f"{server.http_scheme}://{_url_host(settings.http_host)}:{server.http_port}",
            data_dir=str(Path(settings.data_dir).resolve()),
            capacity=self.capacity,
            scenarios=tuple(sorted(server.sessions.scenarios())),
            pid=os.getpid(),
        )
        server.sessions.session_closed.append(self._room_closed)
        self._describe()
        self.heartbeat.start()
        self._loop = LoopingCall(self._describe)
        self._loop.clock = server.reactor
        self._loop.start(self.interval, now=False)
        if self.agones is not None:
            self.agones.start()
            self.agones.warmed()
        return self

    def _describe(self) -> None:
        """On the reactor: what this process is now, for the next beat (dicts only; no I/O)."""
        server = self.server
        rooms = {s: server.sessions.scenario_of(s) or "" for s in list(server.rooms)}
        healthy = server.views.healthy() is True
        self.heartbeat.offer(Beat(self.info, rooms, draining=server.draining, healthy=healthy))
        if self.agones is not None:
            self.agones.tick_healthy(healthy)
            for session in rooms.keys() - self._known:
                self.agones.took_session(session, rooms[session])
            self._known = set(rooms)

    def _room_closed(self, session: str) -> None:
        self.heartbeat.room_closed(session)
        self._describe()
        self.heartbeat.beat_now()

    def stop(self) -> None:
        """A clean stop (after the drain): leave the directory, and tell Agones to shut down."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.agones is not None:
            self.agones.drained()
            self.agones.join()

    # --- failover ----------------------------------------------------------------------------------------

    def _adopt_all(self, orders: Sequence[Order]) -> None:
        for order in orders:
            self.adopt(order)

    def adopt(self, order: Order) -> bool:
        """On the reactor: resume a dead process's room here (see the module doc). False (counted, logged, and
        the room dropped from the directory) when it cannot be."""
        server = self.server
        source = Path(order.data_dir)
        started = time.monotonic()
        try:
            if source.resolve() == Path(server.settings.data_dir).resolve():
                raise ValueError("the order names this process's own folder")
            store = SessionStore(source / SESSIONS_FILE)
            journal = ActionJournal(source / JOURNAL_FILE)
            try:
                codes = [c for c in store.codes(time.time()) if c.session == order.session]
                server.sessions.adopt_session(order.session, order.scenario, source, journal)
                for entry in codes:
                    if server.store is not None:
                        server.store.code_added(entry)
                server.invites.load(codes)
                store.session_closed(order.session)  # the old folder no longer lists it: its process stays out
                journal.forget(order.session)
                checkpoint_path(source, order.session).unlink(missing_ok=True)
            finally:
                store.close()
                journal.close()
        except Exception as exc:  # anything: the room cannot come back here (logged, counted, dropped)
            self.counters["adopt_failed"] += 1
            log.error("fleet: cannot adopt %s from %s: %s: %s", order.session, order.source, type(exc).__name__, exc)
            self.heartbeat.room_closed(order.session)
            self.heartbeat.beat_now()
            return False
        self.counters["adopted"] += 1
        log.info(
            "fleet: adopted %s from %s in %.0f ms", order.session, order.source, 1000 * (time.monotonic() - started)
        )
        self._describe()
        self.heartbeat.beat_now()
        return True

    def _lost(self, rooms: Sequence[str]) -> None:
        """Rooms the directory gave to another process while this one was thought dead: that one runs them now,
        so ours are discarded (no result kept twice)."""
        for session in rooms:
            if session in self.server.rooms:
                self.counters["lost"] += 1
                log.warning("fleet: room %s now runs on another process: discarding this copy", session)
                self.server.sessions.discard_session(session)


def _url_host(host: str) -> str:
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"[{host}]" if ":" in host else host
