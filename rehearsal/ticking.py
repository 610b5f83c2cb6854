"""The fixed tick: each room's physics steps on its own worker thread; the reactor never waits on it.

Every tick (60 Hz by default) the reactor thread snapshots the room's Control, hands the step to the room's
thread (numba releases the GIL, so the reactor keeps serving packets), and gets the report back on the
reactor thread. A step still running at the next tick is an *overrun*: that tick is skipped (never queued,
so the room does not drift into a backlog) and counted. A room that keeps overrunning degrades in a stated
way: the SubstepGovernor lowers its substeps (softer, but real time) and raises them again when there is room.

A ticker can also carry work that belongs after the step on the room's thread: ``before_step()`` runs on the
reactor when the step is handed over (what the reactor owns, e.g. the clients' focus) and its result goes with
the step to ``after_step(report, context)``, which runs on the room's thread right after it (e.g. encoding the
room's snapshots, in nogil numba, in parallel with other rooms and with the reactor); its result is ``prepared``
on the reactor when ``on_report`` runs (``take_prepared``). Either failing costs the tick its prepared work
(counted in the room's counters), never its step.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from physics import StepReport, solver_threads
from rehearsal.room import Room

# Physics may use this share of a tick; the rest is for the network, snapshots and everything else.
PHYSICS_SHARE = 0.6
# The GIL switch interval of a process that runs room threads (CPython's default is 5 ms). A room thread takes the
# GIL back a few times a step (after its physics kernel, the frame's quantization and the one call that encodes
# every client's snapshot, all nogil); while the reactor runs Python it waits up to this long each time before
# CPython makes the reactor let go.
ROOM_SWITCH_INTERVAL = 0.001


@dataclass
class SubstepGovernor:
    """Chooses the substeps of the next step from recent step times (pure policy, no clock of its own).

    Over budget (the p90 of the last `window` steps above PHYSICS_SHARE of the tick): drop substeps by a
    quarter, not below `minimum`. Well under budget (p90 below half of it): add one back, up to `nominal`.
    """

    nominal: int
    tick_seconds: float
    minimum: int = 5
    window: int = 30
    substeps: int = 0
    recent: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.substeps = self.nominal
        self.minimum = min(self.minimum, self.nominal)

    @property
    def budget(self) -> float:
        return PHYSICS_SHARE * self.tick_seconds

    @property
    def degraded(self) -> bool:
        return self.substeps < self.nominal

    def observe(self, step_seconds: float) -> int:
        """Record one step's duration (at the substeps it ran with); return the substeps for the next."""
        self.recent.append(step_seconds / max(self.substeps, 1))  # per-substep cost: comparable across changes
        while len(self.recent) > self.window:
            self.recent.popleft()
        if len(self.recent) < min(self.window, 10):
            return self.substeps
        per_substep = sorted(self.recent)[int(0.9 * (len(self.recent) - 1))]
        predicted = per_substep * self.substeps
        if predicted > self.budget and self.substeps > self.minimum:
            self.substeps = max(self.minimum, int(self.substeps * 0.75))
            self.recent.clear()
        elif predicted < 0.5 * self.budget and self.substeps < self.nominal:
            self.substeps += 1
        return self.substeps


class RoomThread:
    """One room's worker thread: runs what the reactor hands it, in order, and hands each result back.

    Lean on purpose, since the reactor hands over a step every tick of every room: the job goes through a
    ``queue.SimpleQueue`` (C; ``put`` never blocks) and the result comes back with ``reactor.callFromThread``.
    Twisted's ThreadPool did the same through a Condition-based queue and context tracking: with rooms
    stepping beside a busy reactor, the reactor spent a quarter of its time handing steps over (each
    ``Condition.notify`` waiting for the GIL)."""

    def __init__(self, reactor: IReactorTime, name: str, nice: int = 0) -> None:
        self.reactor = reactor
        self.name = name
        self.nice = nice  # added to the process's nice value for this thread (Linux): lower CPU priority
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """The thread is started and not stopped."""
        return self._thread is not None

    def start(self) -> None:
        """Start the thread (idempotent); the process's GIL switch interval becomes at most ROOM_SWITCH_INTERVAL."""
        if sys.getswitchinterval() > ROOM_SWITCH_INTERVAL:
            sys.setswitchinterval(ROOM_SWITCH_INTERVAL)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def run(self, fn: Callable, *args: object) -> defer.Deferred:
        """``fn(*args)`` on the room's thread; the Deferred fires on the reactor thread with its result."""
        self.start()
        d: defer.Deferred = defer.Deferred()
        self._jobs.put((fn, args, d))
        return d

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in flight (if any), then end the thread (bounded wait)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _work(self) -> None:
        name_os_thread(self.name)
        if self.nice:
            with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's own nice value
                base = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), base + self.nice)
        while True:  # bounded by stop(): a None job ends it
            job = self._jobs.get()
            if job is None:
                return
            fn, args, d = job
            try:
                result = fn(*args)
            except BaseException:
                self.reactor.callFromThread(d.errback, Failure())
                continue
            self.reactor.callFromThread(d.callback, result)


_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the OS too (Linux: its first 15 bytes), so ``top -H``, ``/proc`` and the
    load test's per-thread figures tell room threads apart. Silently nothing where prctl is not there."""
    global _libc
    with contextlib.suppress(OSError, AttributeError, TypeError):
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("utf-8", "replace")[:15]), 0, 0, 0)


PHASE_BITS = 6  # 64 phase slots per tick period: more than a process's rooms (sessions.MAX_ROOMS)


def phase_fraction(slot: int, bits: int = PHASE_BITS) -> float:
    """Where in the tick period the room in ``slot`` ticks, as a fraction of it: slots 0, 1, 2, 3, 4 ... tick at
    0, 1/2, 1/4, 3/4, 1/8 ... (``slot``'s bits reversed), so that however many rooms hold the lowest slots, their
    ticks are spread over the period (evenly for 2, 4, 8 ...; never two in one half-gap of the others)."""
    slot = int(slot) % (1 << bits)
    reversed_bits = int(f"{slot:0{bits}b}"[::-1], 2)
    return reversed_bits / (1 << bits)


class TickPhases:
    """Gives the rooms of one process tick phases spread over the tick period, instead of whenever each was created.

    Why: every room's step starts at its tick; rooms whose ticks line up (phases are otherwise the creation times
    modulo the period) all want a core at once, and on two cores the last of four waits for three steps before
    its own (``python -m loadtests.room_threads --together``: 4 rooms' tick p99 16-21 ms, spread 7.6 ms). A room
    takes the lowest free slot (``phase_fraction``) of its tick period when its ticker starts and gives it back
    when it stops; the first room of a period sets the process's phase 0 at its start, so it ticks one period
    later as an unphased ticker does. Rooms of different tick rates have separate slots."""

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._origin: dict[float, float] = {}  # tick period -> reactor time of its phase 0
        self._slots: dict[float, dict[object, int]] = {}  # tick period -> {owner: slot}

    def join(self, owner: object, period: float) -> float:
        """A slot for ``owner`` (kept until ``leave``); returns the seconds until its first tick, in (0, period]."""
        now = self.reactor.seconds()
        slots = self._slots.setdefault(period, {})
        if owner not in slots:
            taken = set(slots.values())
            slots[owner] = next(k for k in range(len(taken) + 1) if k not in taken)
        origin = self._origin.setdefault(period, now)
        target = origin + phase_fraction(slots[owner]) * period
        ahead = (target - now) % period
        return ahead if ahead > 1e-9 else period

    def leave(self, owner: object) -> None:
        """Give ``owner``'s slot back (nothing if it has none)."""
        for period, slots in list(self._slots.items()):
            if slots.pop(owner, None) is not None and not slots:
                del self._slots[period]
                self._origin.pop(period, None)  # the next room of this period sets phase 0 afresh

    def phase_of(self, owner: object) -> float | None:
        """``owner``'s phase as a fraction of its period (None without a slot): the status and tests' view."""
        for slots in self._slots.values():
            if owner in slots:
                return phase_fraction(slots[owner])
        return None


@dataclass(frozen=True)
class StepTiming:
    """Where one step's hand-back time went (seconds): waiting for the room's thread to take it (``queued``),
    ``Room.advance`` (wall and the thread's own CPU time), ``after_step`` (wall and CPU), and waiting for the
    reactor to take the result back (``returned``). Wall well above CPU is time the thread was runnable but had
    no core, or waited for the GIL: what the load test's per-thread scheduler figures tell apart."""

    queued: float = 0.0
    advance: float = 0.0
    advance_cpu: float = 0.0
    after: float = 0.0
    after_cpu: float = 0.0
    returned: float = 0.0


@dataclass
class TickStats:
    """Counts and recent durations. A tick's duration runs from handing the step to the room's thread
    until ``on_report`` (publishing) returned on the reactor thread; a step's is the time ``Room.advance``
    took on the room's thread."""

    ticks: int = 0
    steps: int = 0
    overruns: int = 0
    last_step_seconds: float = 0.0
    last_handback_seconds: float = 0.0  # from handing the step to the room's thread until the reactor has it back
    last_timing: StepTiming = field(default_factory=StepTiming)  # the parts of the last hand-back
    step_seconds: deque = field(default_factory=lambda: deque(maxlen=600))  # the last 10 s at 60 Hz
    step_seconds_sum: float = 0.0  # over every step since the start
    timed_ticks: int = 0  # ticks that ran a step (and so have a duration)
    last_tick_seconds: float = 0.0
    tick_seconds: deque = field(default_factory=lambda: deque(maxlen=600))
    tick_seconds_sum: float = 0.0


class RoomTicker:
    """Drives one room at its scenario's tick rate; `on_report(room, report)` runs on the reactor thread."""

    def __init__(
        self,
        reactor: IReactorTime,
        room: Room,
        on_report: Callable[[Room, StepReport | None], None] | None = None,
        pool: RoomThread | None = None,
        run_in_thread: Callable[..., defer.Deferred] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        physics_threads: int = 1,
        observe_tick: Callable[[float], None] | None = None,
        phases: TickPhases | None = None,
    ) -> None:
        self.reactor = reactor
        self.room = room
        self.on_report = on_report
        self.dt = 1.0 / room.scenario.tick_hz
        self.governor = SubstepGovernor(room.scenario.substeps, self.dt)
        self.stats = TickStats()
        self.clock = clock
        self.observe_tick = observe_tick  # e.g. a metrics histogram's observe(seconds)
        self._pool = pool
        self._run = run_in_thread or self._in_pool
        self._busy = False
        self.busy_since = 0.0  # self.clock() when the step in flight was handed to the room's thread
        self.physics_threads = physics_threads
        self._threads_set = False
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self.phases = phases  # the process's tick phases (None: the first tick one period after start)
        self.before_step: Callable[[], object] | None = None
        self.after_step: Callable[[StepReport | None, object], object] | None = None
        self.prepared: object = None  # after_step's result for the tick being published

    def _in_pool(self, fn: Callable, *args: object) -> defer.Deferred:
        if self._pool is None:  # one thread per room keeps a core free for the reactor (DESIGN.md)
            self._pool = RoomThread(self.reactor, f"room-{self.room.session}")
            self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool.run(fn, *args)

    def start(self) -> defer.Deferred:
        """Tick from now on, every period; the Deferred fires when the loop stops (errback: a tick raised). With
        ``phases`` the first tick comes at this room's phase (at most one period from now), else one period on."""
        started = self._loop.start(self.dt, now=False)
        if self.phases is not None and self._loop.call is not None:
            delay = self.phases.join(self, self.dt)
            # The loop's ticks keep to the grid of its start time: put the grid on the phase, so that a reactor
            # that comes to a tick late (by a millisecond or more) delays that tick only, not the ones after it.
            self._loop.starttime = self.reactor.seconds() + delay - self.dt
            self._loop.call.reset(delay)
        return started

    def stop(self) -> None:
        if self.phases is not None:
            self.phases.leave(self)
        if self._loop.running:
            self._loop.stop()

    @property
    def busy(self) -> bool:
        """A step is in flight: anything that replaces the room's world must wait for it."""
        return self._busy

    def tick(self) -> None:
        self.stats.ticks += 1
        if self._busy:
            self.stats.overruns += 1
            return
        control = self.room.control()  # built here, on the reactor thread, from the inputs so far
        substeps = self.governor.substeps
        self._busy = True
        started = self.busy_since = self.clock()
        context = None
        if self.before_step is not None:
            try:
                context = self.before_step()
            except Exception:  # the step goes on without the prepared work
                self.room.counters["before_step_failed"] += 1
        d = self._run(self._advance, self.dt, substeps, control, context, started)
        d.addCallback(self._done, started)
        d.addErrback(self._failed)

    def _advance(
        self, dt: float, substeps: int, control, context: object = None, handed: float | None = None
    ) -> tuple[StepReport | None, tuple[float, ...], object]:
        """On the room's thread: the step, its timing (``advance``: how long the step took there, not counting
        ``after_step`` nor the wait for the reactor to take the result back: the governor must judge physics,
        not a busy network thread; the rest for ``StepTiming``), and ``after_step``'s result. ``handed``: when
        the tick handed it over (``self.clock()``). The first call sets how many threads its physics uses."""
        if not self._threads_set:
            solver_threads(self.physics_threads)
            self._threads_set = True
        began = self.clock()
        cpu0 = time.thread_time()
        report = self.room.advance(dt, substeps, control)
        cpu1 = time.thread_time()
        advanced = self.clock()
        prepared = None
        after = self.after_step
        if after is not None and context is not None:
            try:
                prepared = after(report, context)
            except Exception:  # the reactor does the work itself this tick
                self.room.counters["after_step_failed"] += 1
        queued = 0.0 if handed is None else began - handed
        timing = (advanced - began, queued, cpu1 - cpu0, self.clock() - advanced, time.thread_time() - cpu1)
        return report, (*timing, self.clock()), prepared

    @property
    def running(self) -> bool:
        """The ticker's loop is started (a stopped one is not expected to tick)."""
        return self._loop.running

    def busy_for(self) -> float:
        """Seconds the step in flight has been out on the room's thread (0 when none is): health's view."""
        return self.clock() - self.busy_since if self._busy else 0.0

    def take_prepared(self) -> object:
        """``after_step``'s result for this tick (None if none), once: the publisher takes it on the reactor."""
        prepared, self.prepared = self.prepared, None
        return prepared

    def _done(self, result: tuple[StepReport | None, tuple[float, ...], object], started: float) -> None:
        self._busy = False
        report, timing, self.prepared = result
        now = self.clock()
        elapsed, queued, advance_cpu, after, after_cpu, finished = timing
        self.stats.last_handback_seconds = now - started
        self.stats.last_timing = StepTiming(queued, elapsed, advance_cpu, after, after_cpu, now - finished)
        if report is not None:
            self.stats.steps += 1
            self.stats.last_step_seconds = elapsed
            self.stats.step_seconds.append(elapsed)
            self.stats.step_seconds_sum += elapsed
            self.governor.observe(elapsed)
        try:
            if self.on_report is not None:
                self.on_report(self.room, report)
        finally:
            self.record_tick(self.clock() - started)

    def record_tick(self, seconds: float) -> None:
        """Count one timed tick of ``seconds`` (the ticker does after each publish)."""
        stats = self.stats
        stats.timed_ticks += 1
        stats.last_tick_seconds = seconds
        stats.tick_seconds.append(seconds)
        stats.tick_seconds_sum += seconds
        if self.observe_tick is not None:
            self.observe_tick(seconds)

    def _failed(self, failure) -> None:
        self._busy = False
        self.room.counters["step_failed"] += 1
        self.room.counters[f"step_failed_{failure.type.__name__}"] += 1
