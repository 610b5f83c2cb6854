"""Session lifecycle: create rooms, tick and publish them, end and close them, keep their results, drain.

``Sessions.create_session`` makes a ``LiveRoom`` from one of the server's scenarios (packaged, or in
``settings.scenario_dir``): a ``Room``, its ``RoomThread`` and ``RoomTicker``, its ``SnapshotServer``. Every
tick with news (``on_report``, on the reactor thread) publishes the room (``Publisher``), times that (the
``observe_publish`` metric and the tick observers), and ends a room that stayed empty longer than
``settings.empty_room_seconds``. ``end_room`` tells the room it ended and closes it ``KICK_DELAY`` later
(``close_room``: ticker and thread stopped, clients disconnected, result saved).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from netcode.sync.snapshot_codec import SnapshotServer
from physics import StepReport
from rehearsal.lifecycle import RoomState
from rehearsal.live_room import LiveRoom, surface_layout
from rehearsal.publishing import Publisher
from rehearsal.recording import Recorder
from rehearsal.results_store import ResultsStore
from rehearsal.room import Room
from rehearsal.scenario import available_scenarios, load_scenario
from rehearsal.settings import Settings
from rehearsal.ticking import RoomThread, RoomTicker

log = logging.getLogger("rehearsal.sessions")

KICK_DELAY = 0.5  # s: time for a last reliable message (refusal, `ended`) before disconnecting
MAX_ROOMS = 64
# Room threads run at a lower CPU priority than the reactor: with several rooms stepping on two cores the reactor
# (which publishes every room) otherwise waits for a core behind its own physics threads.
ROOM_THREAD_NICE = 5


class TickObserver(Protocol):
    def __call__(self, session: str, handback_seconds: float, publish_seconds: float) -> None:
        """One room tick that ran a step: ``handback_seconds`` from handing the step to the room's thread
        until the reactor had it back (queueing + physics + hand-back), ``publish_seconds`` publishing it."""


def _ignore(_: float) -> None:
    pass


class Sessions:
    """The live rooms by session id (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        *,
        publisher: Publisher,
        results: ResultsStore,
        counters: Counter[str],
        clock: Callable[[], float] = time.monotonic,
        server_time: Callable[[], float] = time.monotonic,
        observe_tick: Callable[[float], None] | None = None,
        observe_physics_step: Callable[[float], None] = _ignore,
        observe_publish: Callable[[float], None] = _ignore,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.publisher = publisher
        self.results = results
        self.counters = counters
        self.clock = clock
        self.server_time = server_time
        self.observe_tick = observe_tick
        self.observe_physics_step = observe_physics_step
        self.observe_publish = observe_publish
        self.rooms: dict[str, LiveRoom] = {}
        self.tick_observers: list[TickObserver] = []
        self.draining = False
        # Set by Connections: forget and disconnect a closing room's clients.
        self.on_room_closed: Callable[[LiveRoom], None] = lambda live: None
        # Set by the composition root: what else goes with a closed session (its code book).
        self.session_closed: list[Callable[[str], None]] = []

    def scenarios(self) -> dict[str, Any]:
        """The scenarios this server offers, by name (``rehearsal.scenario.available_scenarios``)."""
        return available_scenarios(self.settings.scenario_dir)

    def session_open(self, session: str) -> bool:
        live = self.rooms.get(session)
        return live is not None and live.room.state is not RoomState.ENDED

    def create_session(self, scenario_name: str) -> str:
        """A new room from one of the server's scenarios, ticking at once; returns its session id."""
        known = self.scenarios()
        if scenario_name not in known:
            raise ValueError(f"unknown scenario {scenario_name!r} (available: {', '.join(sorted(known))})")
        if len(self.rooms) >= MAX_ROOMS:
            raise ValueError(f"this server already runs {MAX_ROOMS} rooms")
        if self.draining:
            raise ValueError("this server is draining: create the session on another one")
        session = "s-" + secrets.token_urlsafe(9)
        scenario = load_scenario(known[scenario_name])
        room = Room(session, scenario)
        if self.settings.record:
            path = self.settings.data_dir / "recordings" / f"{session}.rec"
            room.recorder = Recorder(path, session, scenario)
        sync = SnapshotServer(surface_layout(room), triangles=room.model.surface)
        pool = RoomThread(self.reactor, f"room-{session}", nice=ROOM_THREAD_NICE)
        pool.start()
        ticker = RoomTicker(
            self.reactor,
            room,
            on_report=self.on_report,
            pool=pool,
            physics_threads=self.settings.physics_threads,
            observe_tick=self.observe_tick,
        )
        self.rooms[session] = LiveRoom(
            room,
            sync,
            ticker=ticker,
            pool=pool,
            server_time=self.server_time,
            counters=self.counters,
            empty_since=self.clock(),
        )
        ticker.start().addErrback(self._ticker_failed, session)
        self.counters["rooms_created"] += 1
        log.info("session %s created (scenario %s)", session, scenario_name)
        return session

    def _ticker_failed(self, failure: Any, session: str) -> None:
        self.counters["ticker_failed"] += 1
        log.error("room %s: tick loop failed: %s", session, failure.type.__name__)

    # --- ticks -------------------------------------------------------------------------------------------

    def on_report(self, room: Room, report: StepReport | None) -> None:
        """A tick came back (``RoomTicker.on_report``): publish the room, time it, end it if long empty."""
        live = self.rooms.get(room.session)
        if live is None or live.ending:
            return
        if report is not None:
            self.observe_physics_step(live.ticker.stats.last_step_seconds)
        started = time.perf_counter()
        try:
            self.publisher.publish(live, report)
        except Exception as exc:  # a publishing bug must not stop the room's tick loop
            self.counters["publish_failed"] += 1
            log.error("room %s: publishing failed: %s: %s", room.session, type(exc).__name__, exc)
        publish_seconds = time.perf_counter() - started
        self.observe_publish(publish_seconds)
        if report is not None and self.tick_observers:
            handback = live.ticker.stats.last_handback_seconds
            for observe in list(self.tick_observers):
                observe(room.session, handback, publish_seconds)
        if (
            live.empty_since is not None
            and self.clock() - live.empty_since > self.settings.empty_room_seconds
            and not live.ending
        ):
            self.end_room(room.session)

    # --- ending ------------------------------------------------------------------------------------------

    def end_room(self, session: str) -> None:
        """Tell the room it ended, then disconnect its clients and free it a moment later."""
        live = self.rooms.get(session)
        if live is None or live.ending:
            return
        live.ending = True
        if live.room.state is not RoomState.ENDED:
            live.room.end()
        if live.ticker is not None:
            live.ticker.stop()
        live.broadcast_event("ended", detail={"state": live.room.state.value})
        self.counters["rooms_ended"] += 1
        log.info("session %s ended", session)
        self.reactor.callLater(KICK_DELAY, self.close_room, session)

    def close_room(self, session: str) -> None:
        """Stop the room's ticker and thread, keep its result, disconnect its clients."""
        live = self.rooms.pop(session, None)
        if live is None:
            return
        if live.ticker is not None:
            live.ticker.stop()
        if live.pool is not None:
            live.pool.stop()  # waits for a step in flight (milliseconds)
        self.save_result(live)
        self.on_room_closed(live)
        self._forget(session)

    def discard_session(self, session: str) -> None:
        """Free a room whose creation failed after it was made (no invites): no result, no recording kept."""
        live = self.rooms.pop(session, None)
        if live is None:
            return
        if live.ticker is not None:
            live.ticker.stop()
        if live.pool is not None:
            live.pool.stop()
        recorder = live.room.recorder
        if recorder is not None:
            recorder.close(RoomState.ENDED.value)
            recorder.path.unlink(missing_ok=True)
        self.counters["rooms_discarded"] += 1
        self.on_room_closed(live)
        self._forget(session)

    def _forget(self, session: str) -> None:
        for listener in list(self.session_closed):
            try:
                listener(session)
            except Exception as exc:  # a failing listener must not keep the others from running
                self.counters["session_closed_failed"] += 1
                log.error("session %s: closing hook failed: %s: %s", session, type(exc).__name__, exc)

    def save_result(self, live: LiveRoom) -> None:
        """Close the room's recording and keep its result; a failing disk is logged, never raised."""
        room = live.room
        try:
            if room.recorder is not None:
                room.recorder.close(room.state.value)
            self.results.save(room.result(live.created_at, time.time()))
            self.counters["results_saved"] += 1
        except (OSError, sqlite3.Error) as exc:
            self.counters["results_failed"] += 1
            log.error("session %s: could not keep its result: %s", room.session, exc)

    def close_all(self) -> None:
        """End (if need be) and close every room now: the server stops."""
        self.draining = True
        for session, live in list(self.rooms.items()):
            if live.room.state is not RoomState.ENDED:
                live.room.end()
            self.close_room(session)

    # --- drain (ops.drain.Drain calls these) ------------------------------------------------------------

    def closed(self) -> str | None:
        """For the join API: a reason while no new sessions or joins are taken."""
        return "the server is draining: no new sessions or joins" if self.draining else None

    def room_empty(self, session: str) -> bool:
        live = self.rooms.get(session)
        return live is None or not any(p.connected for p in live.room.participants.values())

    def announce_drain(self, seconds: float) -> None:
        """Every room still on is told the deadline (reliable ``event`` ``draining``, in server time)."""
        deadline = self.server_time() + seconds
        for live in list(self.rooms.values()):
            if not live.ending:
                live.broadcast_event("draining", detail={"deadline": deadline, "seconds": seconds})
