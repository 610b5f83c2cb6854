"""Session lifecycle: create rooms, tick and publish them, end and close them, keep their results, drain.

``Sessions.create_session`` makes a ``LiveRoom`` from one of the server's scenarios (packaged, or in
``settings.scenario_dir``): a ``Room``, its ``RoomThread`` and ``RoomTicker``, its ``SnapshotServer``. Every
tick with news (``on_report``, on the reactor thread) publishes the room (``Publisher``), times that (the
``observe_publish`` metric and the tick observers), and ends a room that stayed empty longer than
``settings.empty_room_seconds``. ``end_room`` tells the room it ended and closes it ``KICK_DELAY`` later
(``close_room``: ticker and thread stopped, clients disconnected, result saved).

Crash recovery: with a ``SessionStore`` each open session is listed until it closes, and with a
``CheckpointWriter`` each room is checkpointed between ticks (``rehearsal.checkpoints``: the policy, what is
taken on which thread). ``resume_sessions`` brings back, at start, what a crashed process left open.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from netcode.sync.motion_bound import DEFAULT_MOVING_ERROR
from netcode.sync.snapshot_codec import SnapshotServer
from physics import StepReport
from rehearsal.checkpoints import (
    INTERVAL_SECONDS,
    CheckpointFileError,
    CheckpointPolicy,
    CheckpointWriter,
    RoomCapture,
    apply,
    checkpoint_path,
    fingerprint,
    reactor_part,
    read_checkpoint,
    room_part,
)
from rehearsal.journal import ActionJournal
from rehearsal.lifecycle import RoomState
from rehearsal.live_room import LiveRoom, surface_layout
from rehearsal.publishing import Publisher
from rehearsal.recording import Recorder, RecordingError
from rehearsal.results_store import ResultsStore, SessionResult
from rehearsal.room import Room
from rehearsal.scenario import ScenarioError, available_scenarios, load_scenario
from rehearsal.session_store import SessionStore
from rehearsal.settings import Settings
from rehearsal.ticking import RoomThread, RoomTicker, TickPhases

log = logging.getLogger("rehearsal.sessions")

INTERRUPTED = "interrupted"  # the end state of a session the server could not carry on after a crash
RESUME_HOLD_SECONDS = 15.0  # a resumed room waits this long at most for its team before it ticks again
RESUME_POLL_SECONDS = 0.05
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
        store: SessionStore | None = None,
        checkpoints: CheckpointWriter | None = None,
        checkpoint_key: bytes | None = None,
        checkpoint_interval: float = INTERVAL_SECONDS,
        journal: ActionJournal | None = None,
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
        self.store = store  # open sessions survive a restart (None: they live in memory only)
        self.checkpoints = checkpoints  # rooms' checkpoints are written (None: not)
        self.checkpoint_key = checkpoint_key
        self.checkpoint_interval = checkpoint_interval
        self.journal = journal  # acknowledged mentor actions and steps, on disk before they are told (None: not)
        self.checkpoint_capture_seconds = 0.0  # the last room-thread part of a checkpoint, from queueing
        self._policies: dict[str, CheckpointPolicy] = {}
        self.held: set[str] = set()  # resumed rooms not ticking yet: waiting for their team (RESUME_HOLD_SECONDS)
        # Seats promised to newcomers who have a connect token but are not connected yet: participant -> until
        # (``reserve_seat``; per room at most its capacity, gone with the room).
        self.seat_holds: dict[str, dict[int, float]] = {}
        self._scenario_names: dict[str, str] = {}
        self.tick_observers: list[TickObserver] = []
        self.tick_phases = TickPhases(reactor)  # rooms' ticks spread over the tick period (rehearsal.ticking)
        self.draining = False
        # Set by Connections: forget and disconnect a closing room's clients.
        self.on_room_closed: Callable[[LiveRoom], None] = lambda live: None
        # Set by the composition root: what else goes with a closed session (its code book).
        self.session_closed: list[Callable[[str], None]] = []

    def scenarios(self) -> dict[str, Any]:
        """The scenarios this server offers, by name (``rehearsal.scenario.available_scenarios``)."""
        return available_scenarios(self.settings.scenario_dir)

    def scenario_of(self, session: str) -> str | None:
        """The name of the scenario a live room was made from (as ``create_session`` was given it)."""
        return self._scenario_names.get(session)

    def session_open(self, session: str) -> bool:
        live = self.rooms.get(session)
        return live is not None and live.room.state is not RoomState.ENDED

    def reserve_seat(self, participant: int, session: str, seconds: float) -> bool:
        """Hold a seat of a room for a newcomer about to get a connect token, for ``seconds`` (the token's life):
        False, counted as ``budget_refused_room_full``, when the people connected plus the seats already held
        fill the room's capacity (``Scenario.max_participants``), so a full room is refused before a token is
        minted and a handshake spent. A room that is not here holds nothing (the join service checks it is open).
        """
        live = self.rooms.get(session)
        if live is None:
            return True
        room, now = live.room, self.clock()
        holds = self.seat_holds.setdefault(session, {})
        for pid, until in list(holds.items()):
            if until <= now or pid in room.participants:  # expired, or arrived (then counted as connected)
                del holds[pid]
        if room.connected_count() + len(holds) >= room.scenario.max_participants:
            self.counters["budget_refused_room_full"] += 1
            return False
        holds[participant] = now + seconds
        return True

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
            room.recorder = Recorder(self._recording_path(session), session, scenario)
        live = self._open_room(room, scenario_name)
        if self.store is not None:
            self.store.session_opened(session, scenario_name, live.created_at)
        live.ticker.start().addErrback(self._ticker_failed, session)
        self.counters["rooms_created"] += 1
        log.info("session %s created (scenario %s)", session, scenario_name)
        return session

    def _recording_path(self, session: str) -> Path:
        return Path(self.settings.data_dir) / "recordings" / f"{session}.rec"

    def _open_room(self, room: Room, scenario_name: str, created_at: float | None = None) -> LiveRoom:
        """The room's snapshot server, thread and ticker (not started), as a LiveRoom in ``rooms``."""
        session = room.session
        # moving patches within 0.5 mm, refined to the 0.1 mm bound once they settle (SNAPSHOT.md 4)
        sync = SnapshotServer(surface_layout(room), triangles=room.model.surface, moving_error=DEFAULT_MOVING_ERROR)
        pool = RoomThread(self.reactor, f"room-{session}", nice=ROOM_THREAD_NICE)
        pool.start()
        ticker = RoomTicker(
            self.reactor,
            room,
            on_report=self.on_report,
            pool=pool,
            physics_threads=self.settings.physics_threads,
            observe_tick=self.observe_tick,
            phases=self.tick_phases,
        )
        live = LiveRoom(
            room,
            sync,
            ticker=ticker,
            pool=pool,
            server_time=self.server_time,
            counters=self.counters,
            empty_since=self.clock(),
        )
        if created_at is not None:
            live.created_at = created_at
        self.rooms[session] = live
        self._scenario_names[session] = scenario_name
        self._policies[session] = CheckpointPolicy(interval=self.checkpoint_interval)  # the first tick takes one
        return live

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
        self._journal_steps(live)  # on disk before the team is told of them
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
            return
        if self.checkpoints is not None:
            self._maybe_checkpoint(live)

    # --- checkpoints -------------------------------------------------------------------------------------

    def _maybe_checkpoint(self, live: LiveRoom) -> None:
        """Between two ticks (the room's thread is idle): if one is due, take the reactor's part here and
        queue the room's part on the room's thread ahead of the next step; the writer thread does the rest."""
        session = live.room.session
        policy = self._policies.get(session)
        if policy is None or live.pool is None or not hasattr(self.reactor, "callFromThread"):
            return  # (a test's fake reactor cannot take results from the room's thread)
        now = self.clock()
        mark = fingerprint(live.room)
        if not policy.due(now, mark):
            return
        policy.taken(now, mark)
        try:
            seq = self.journal.last_seq if self.journal is not None else 0
            capture_ = reactor_part(live.room, self._scenario_names[session], live.created_at, journal_seq=seq)
        except Exception as exc:  # never into the tick loop
            policy.in_flight = False
            self.counters["checkpoints_failed"] += 1
            log.error("session %s: checkpoint failed: %s: %s", session, type(exc).__name__, exc)
            return
        started = time.perf_counter()
        d = live.pool.run(room_part, live.room, capture_)
        d.addCallback(self._checkpoint_taken, session, policy, started)
        d.addErrback(self._checkpoint_failed, session, policy)

    def _checkpoint_taken(self, capture_: RoomCapture, session: str, policy: CheckpointPolicy, started: float) -> None:
        policy.in_flight = False
        self.checkpoint_capture_seconds = time.perf_counter() - started
        if session in self.rooms and self.checkpoints is not None:
            self.checkpoints.submit(capture_)
            self.counters["checkpoints_taken"] += 1

    def _checkpoint_failed(self, failure: Any, session: str, policy: CheckpointPolicy) -> None:
        policy.in_flight = False
        self.counters["checkpoints_failed"] += 1
        log.error("session %s: checkpoint failed: %s", session, failure.type.__name__)

    def checkpoint_written(self, session: str, journal_seq: int) -> None:
        """A checkpoint is on disk (the writer thread tells the reactor): the journal entries it includes go."""
        if self.journal is not None and session in self.rooms:
            self.journal.checkpointed(session, journal_seq)

    # --- the action journal ------------------------------------------------------------------------------

    def journal_command(self, session: str, participant: int, action: str, args: dict[str, Any]) -> None:
        """An accepted command, journaled before its event goes out (``rehearsal.journal``)."""
        if self.journal is not None:
            self.journal.append(session, "command", {"participant": participant, "action": action, "args": args})

    def _journal_steps(self, live: LiveRoom) -> None:
        if self.journal is not None:
            for event in live.room.step_events():
                self.journal.append(live.room.session, "step", event.detail)

    def _replay_journal(self, room: Room, after: int, journal: ActionJournal | None = None) -> int:
        """The room's journaled actions since its checkpoint (in ``journal``, by default this server's), done
        again on the resumed room; how many."""
        journal = journal if journal is not None else self.journal
        if journal is None:
            return 0
        replayed = 0
        for entry in journal.entries(room.session, after):
            body = entry.body
            if entry.kind == "command":
                participant, action, args = body.get("participant"), body.get("action"), body.get("args")
                ok = isinstance(participant, int) and isinstance(action, str) and isinstance(args, dict)
                ok = ok and room.replay_command(participant, action, args) is None  # type: ignore[arg-type]
            else:
                ok = room.replay_step(body)
            replayed += ok
            self.counters["journal_replayed" if ok else "journal_not_replayed"] += 1
        return replayed

    def checkpoint_now(self, session: str) -> None:
        """Take a checkpoint of the room at its next tick boundary (load runs and tests)."""
        policy = self._policies.get(session)
        if policy is not None:
            policy.last_at = float("-inf")

    # --- resuming after a restart ------------------------------------------------------------------------

    def resume_sessions(self, keep: Callable[[str], bool] = lambda session: True) -> list[str]:
        """Every session the store still lists as open comes back from its checkpoint (participants away until
        they rejoin with their codes); one that cannot keeps its result, marked ``interrupted``. Returns the
        sessions resumed. ``keep(session)`` False leaves a session alone (a fleet moved it to another process)."""
        if self.store is None:
            return []
        resumed = []
        for row in self.store.open_sessions():
            if not keep(row.session):
                continue
            try:
                if len(self.rooms) >= MAX_ROOMS:
                    raise ValueError(f"this server already runs {MAX_ROOMS} rooms")
                live = self._resume(row.session, row.scenario)
            except (CheckpointFileError, RecordingError, ScenarioError, OSError, ValueError) as exc:
                log.error("session %s: cannot resume: %s", row.session, exc)
                self.counters["sessions_interrupted"] += 1
                self._keep_interrupted(row.session, row.scenario, row.created_at)
                continue
            resumed.append(row.session)
            self.counters["sessions_resumed"] += 1
            log.info("session %s resumed at frame %d", row.session, live.room.frame)
        return resumed

    def adopt_session(
        self, session: str, scenario_name: str, source_dir: Path, source_journal: ActionJournal
    ) -> LiveRoom:
        """The fleet's failover (``rehearsal.fleet.member``): resume a room another process ran, from the checkpoint
        and journal it left in ``source_dir`` (its recording copied here first); from then on it is this server's,
        listed in this store. Raises like ``_resume`` (or ValueError when full or draining)."""
        if session in self.rooms:
            raise ValueError(f"session {session} already runs here")
        if len(self.rooms) >= MAX_ROOMS:
            raise ValueError(f"this server already runs {MAX_ROOMS} rooms")
        if self.draining:
            raise ValueError("this server is draining")
        source = Path(source_dir) / "recordings" / f"{session}.rec"
        if source.exists():
            self._recording_path(session).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self._recording_path(session))
        live = self._resume(session, scenario_name, source_dir=Path(source_dir), journal=source_journal)
        if self.store is not None:
            self.store.session_opened(session, scenario_name, live.created_at)
        self.counters["sessions_adopted"] += 1
        log.info("session %s adopted at frame %d", session, live.room.frame)
        return live

    def _resume(
        self, session: str, scenario_name: str, source_dir: Path | None = None, journal: ActionJournal | None = None
    ) -> LiveRoom:
        if self.checkpoint_key is None:
            raise CheckpointFileError("no checkpoint key")
        saved = read_checkpoint(checkpoint_path(source_dir or self.settings.data_dir, session), self.checkpoint_key)
        if saved.session != session:
            raise CheckpointFileError(f"the checkpoint of {session} names {saved.session}")
        known = self.scenarios()
        if scenario_name not in known:
            raise ScenarioError(f"scenario {scenario_name!r} is no longer offered")
        scenario = load_scenario(known[scenario_name])
        room = Room(session, scenario)
        away = {pid for pid, p in saved.reactor["participants"].items() if p.connected}
        apply(saved, room)
        path = self._recording_path(session)
        if saved.recording is not None and path.exists():
            room.recorder = Recorder(path, session, scenario, resume_at=saved.recording)
        replayed = self._replay_journal(room, int(saved.reactor.get("journal_seq", 0)), journal)
        if replayed:
            log.info("session %s: %d journaled actions replayed on its checkpoint", session, replayed)
        live = self._open_room(room, scenario_name, created_at=saved.created_at)
        if room.state is RoomState.ENDED:  # the mentor had ended it: it ends now, its result kept
            self.end_room(session)
            return live
        self._hold_until_back(live, away)
        return live

    def _hold_until_back(self, live: LiveRoom, expected: set[int]) -> None:
        """A resumed room ticks once everyone who was in it is back (their grasps then carry on under their
        hands), or after ``RESUME_HOLD_SECONDS``, whichever comes first."""
        deadline = self.reactor.seconds() + RESUME_HOLD_SECONDS  # the reactor's time: what callLater counts in
        session = live.room.session

        def check() -> None:
            if self.rooms.get(session) is not live or live.ending:
                return
            back = all(p.connected for pid, p in live.room.participants.items() if pid in expected)
            if back or self.reactor.seconds() >= deadline:
                self.held.discard(session)
                live.ticker.start().addErrback(self._ticker_failed, session)
                log.info("session %s: ticking again (%s)", session, "team back" if back else "hold over")
                return
            self.reactor.callLater(RESUME_POLL_SECONDS, check)

        self.held.add(session)
        check()

    def _keep_interrupted(self, session: str, scenario_name: str, created_at: float) -> None:
        """A session that cannot resume: its result from its checkpoint if one can be read, else what the
        store knows, stored as ``interrupted``; then it is forgotten like a closed one."""
        result = None
        try:
            if self.checkpoint_key is not None:
                saved = read_checkpoint(checkpoint_path(self.settings.data_dir, session), self.checkpoint_key)
                scenario = load_scenario(self.scenarios()[scenario_name])
                room = Room(session, scenario)
                apply(saved, room)
                result = room.result(created_at, time.time())
        except Exception:  # anything: the minimal result below is kept instead
            result = None
        if result is None:
            result = SessionResult(session, scenario_name, created_at, time.time(), "", 0, 0.0, [], {}, [])
        result.end_state = INTERRUPTED
        path = self._recording_path(session)
        result.recording = str(path) if path.exists() else None
        try:
            self.results.save(result)
            self.counters["results_saved"] += 1
        except (OSError, sqlite3.Error) as exc:
            self.counters["results_failed"] += 1
            log.error("session %s: could not keep its result: %s", session, exc)
            return  # kept in the store: the next start tries again
        self._forget(session)

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
        live = self._take_room(session)
        if live is None:
            return
        self.save_result(live)
        self.on_room_closed(live)
        self._forget(session)

    def discard_session(self, session: str) -> None:
        """Free a room whose creation failed after it was made (no invites): no result, no recording kept."""
        live = self._take_room(session)
        if live is None:
            return
        recorder = live.room.recorder
        if recorder is not None:
            recorder.close(RoomState.ENDED.value)
            recorder.path.unlink(missing_ok=True)
        self.counters["rooms_discarded"] += 1
        self.on_room_closed(live)
        self._forget(session)

    def _take_room(self, session: str) -> LiveRoom | None:
        """Remove a room from the server and stop its ticker and thread (waits for a step in flight, ms)."""
        live = self.rooms.pop(session, None)
        if live is not None:
            if live.ticker is not None:
                live.ticker.stop()
            if live.pool is not None:
                live.pool.stop()
        return live

    def _forget(self, session: str) -> None:
        self._policies.pop(session, None)
        self.seat_holds.pop(session, None)
        if self.journal is not None:
            self.journal.forget(session)
        self.held.discard(session)
        self._scenario_names.pop(session, None)
        if self.checkpoints is not None:
            self.checkpoints.delete(session)
        if self.store is not None:
            try:
                self.store.session_closed(session)
            except sqlite3.Error as exc:
                self.counters["store_failed"] += 1
                log.error("session %s: could not forget it in the store: %s", session, exc)
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
