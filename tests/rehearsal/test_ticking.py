"""The tick driver: steps off the reactor thread, overruns skipped and counted, substeps degrade and recover."""

import queue
import sys
import threading
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario
from rehearsal.ticking import (
    PHYSICS_SHARE,
    ROOM_SWITCH_INTERVAL,
    RoomThread,
    RoomTicker,
    SubstepGovernor,
    TickPhases,
    phase_fraction,
)

TICK = 1 / 60


def test_governor_lowers_substeps_when_over_budget_and_recovers():
    g = SubstepGovernor(nominal=20, tick_seconds=TICK, minimum=5)
    per_substep_slow = 2 * PHYSICS_SHARE * TICK / 20  # twice the budget at 20 substeps
    for _ in range(100):
        g.observe(per_substep_slow * g.substeps)
    assert g.degraded and g.substeps == 8  # 20 -> 15 -> 11 -> 8 fits: 8 x slow = 0.8 x budget
    assert per_substep_slow * g.substeps <= g.budget
    for _ in range(400):
        g.observe(0.1 * per_substep_slow * g.substeps)  # the load went away
    assert g.substeps == 20 and not g.degraded


def test_governor_never_goes_below_its_minimum():
    g = SubstepGovernor(nominal=20, tick_seconds=TICK, minimum=5)
    for _ in range(200):
        g.observe(1.0)
    assert g.substeps == 5


@pytest.fixture
def room():
    r = Room("s-1", load_scenario("basic_skills"))
    r.join(Identity("s-1", 1, Role.MENTOR, "m"))
    r.start()
    return r


def test_each_tick_steps_the_room_with_the_governors_substeps(room):
    clock, seen, calls = Clock(), [], []

    def run_now(fn, *args):
        calls.append(args[1])
        return defer.succeed(fn(*args))

    ticker = RoomTicker(clock, room, on_report=lambda r, rep: seen.append(rep), run_in_thread=run_now)
    ticker.start()
    for _ in range(3):
        clock.advance(TICK)
    ticker.stop()
    assert ticker.stats.steps == 3 and len(seen) == 3 and room.frame == 3
    assert calls == [room.scenario.substeps] * 3


def test_a_step_still_running_makes_the_next_tick_an_overrun(room):
    clock, pending = Clock(), []

    def run_later(fn, *args):
        d = defer.Deferred()
        pending.append((d, fn, args))
        return d

    ticker = RoomTicker(clock, room, run_in_thread=run_later)
    ticker.start()
    clock.advance(TICK)
    assert ticker.busy
    clock.advance(TICK)
    clock.advance(TICK)
    assert ticker.stats.overruns == 2 and len(pending) == 1  # skipped, not queued
    d, fn, args = pending.pop()
    d.callback(fn(*args))
    assert not ticker.busy and ticker.stats.steps == 1
    clock.advance(TICK)
    assert len(pending) == 1
    ticker.stop()


def test_a_failing_step_is_counted_and_the_room_keeps_ticking(room):
    clock = Clock()
    ticker = RoomTicker(clock, room, run_in_thread=lambda fn, *a: defer.fail(RuntimeError("boom")))
    ticker.start()
    clock.advance(TICK)
    clock.advance(TICK)
    ticker.stop()
    assert room.counters["step_failed"] == 2 and room.counters["step_failed_RuntimeError"] == 2
    assert not ticker.busy


def test_phase_slots_spread_any_number_of_rooms_over_the_period():
    assert [phase_fraction(k) for k in range(8)] == [0, 1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8]
    for n in range(2, 17):  # the first n slots: no two closer than half the even spacing
        phases = sorted(phase_fraction(k) for k in range(n))
        gaps = [b - a for a, b in zip(phases, [*phases[1:], 1 + phases[0]], strict=True)]
        assert min(gaps) >= 0.5 / n - 1e-12 and len(set(phases)) == n


def test_tick_phases_give_rooms_free_slots_from_the_first_rooms_phase_and_take_them_back():
    clock = Clock()
    clock.advance(100.003)
    phases = TickPhases(clock)
    a, b, c = object(), object(), object()
    assert phases.join(a, TICK) == pytest.approx(TICK)  # the first room: one period on, as an unphased ticker
    clock.advance(0.005)
    assert phases.join(b, TICK) == pytest.approx(TICK / 2 - 0.005)  # half a period after a's ticks
    assert phases.join(b, TICK) == pytest.approx(TICK / 2 - 0.005)  # joined once: same slot
    assert (phases.phase_of(a), phases.phase_of(b)) == (0, 1 / 2)
    phases.leave(a)
    assert phases.join(c, TICK) == pytest.approx(TICK - 0.005)  # a's slot again, on the same phase 0
    assert phases.phase_of(a) is None and phases.phase_of(c) == 0
    phases.leave(b)
    phases.leave(c)
    clock.advance(0.004)
    assert phases.join(a, 1 / 30) == pytest.approx(1 / 30)  # every room gone: phase 0 afresh (per period)


def test_phased_tickers_tick_at_their_slots_and_one_stopped_before_its_first_tick_never_ticks(room):
    clock, ticks = Clock(), []
    phases = TickPhases(clock)
    other = Room("s-2", load_scenario("basic_skills"))
    other.join(Identity("s-2", 1, Role.MENTOR, "m"))
    other.start()

    def run_now(fn, *args):
        return defer.succeed(fn(*args))

    first = RoomTicker(
        clock,
        room,
        on_report=lambda r, _: ticks.append((r.session, clock.seconds())),
        run_in_thread=run_now,
        phases=phases,
    )
    second = RoomTicker(
        clock,
        other,
        on_report=lambda r, _: ticks.append((r.session, clock.seconds())),
        run_in_thread=run_now,
        phases=phases,
    )
    first.start()
    clock.advance(0.001)
    second.start()
    assert second.running and not second.stats.ticks
    for _ in range(100):
        clock.advance(TICK / 100)
    assert [s for s, _ in ticks] == ["s-2", "s-1"]  # the second room half a period after the first room's phase
    (_, t2), (_, t1) = ticks
    assert t2 == pytest.approx(TICK / 2, abs=TICK / 100) and t1 == pytest.approx(TICK, abs=TICK / 100)
    second.stop()
    ticks.clear()
    second.start()  # just after the first period: its slot again, due at 1.5 ticks
    clock.advance(TICK / 2 + 0.004)  # the reactor comes to it 4 ms late: the ticks after it keep to the phase
    for _ in range(100):
        clock.advance(TICK / 100)
    late, on_phase = [t for s, t in ticks if s == "s-2"]
    assert late >= 1.5 * TICK + 0.004  # its phase was at 1.5 ticks
    assert on_phase == pytest.approx(2.5 * TICK, abs=TICK / 100)  # not a period after the late one
    ended = []
    first.stop()
    second.stop()
    brief = RoomTicker(clock, room, run_in_thread=run_now, phases=phases)
    brief.start().addCallback(ended.append)
    brief.stop()  # before its first tick
    clock.advance(2 * TICK)
    assert ended and not brief.running and brief.stats.ticks == 0 and phases.phase_of(brief) is None


def test_on_the_real_reactor_steps_run_on_the_rooms_thread():
    """A subprocess runs the real reactor for half a second: steps happen off the reactor thread."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json, threading
from twisted.internet import reactor
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario
from rehearsal.ticking import RoomTicker

room = Room("s", load_scenario("basic_skills"))
room.join(Identity("s", 1, Role.MENTOR, "m"))
room.start()
threads = set()
original = room.advance
def advance(*args):
    threads.add(threading.current_thread().name)
    return original(*args)
room.advance = advance
reports = []
ticker = RoomTicker(reactor, room, on_report=lambda r, rep: reports.append(threading.current_thread().name))
ticker.start()
deadline = reactor.seconds() + 20.0  # a loaded machine steps slowly; an idle one is done in ~0.1 s
def finish():
    if ticker.stats.steps < 5 and reactor.seconds() < deadline:
        reactor.callLater(0.05, finish)
        return
    ticker.stop()
    print(json.dumps({"steps": ticker.stats.steps, "threads": sorted(threads), "report_threads": sorted(set(reports))}))
    reactor.stop()
reactor.callLater(0.1, finish)
reactor.run()
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps"] >= 5
    assert result["threads"] == ["room-s"] and result["report_threads"] == ["MainThread"]


def test_tick_duration_covers_the_step_and_publishing_and_feeds_the_observer(room, monkeypatch):
    """A tick: waiting for the room's thread (1 ms), the step there (4 ms), publishing (2 ms); the step
    time the governor judges is the 4 ms alone."""
    clock, observed, now = Clock(), [], [0.0]
    advance = room.advance

    def timed_advance(*args):
        now[0] += 0.004
        return advance(*args)

    monkeypatch.setattr(room, "advance", timed_advance)

    def run_now(fn, *args):
        now[0] += 0.001  # queued behind other work
        return defer.succeed(fn(*args))

    def publish(r, report):
        now[0] += 0.002  # publishing on the reactor thread

    ticker = RoomTicker(
        clock, room, on_report=publish, run_in_thread=run_now, clock=lambda: now[0], observe_tick=observed.append
    )
    ticker.start()
    for _ in range(3):
        clock.advance(TICK)
    ticker.stop()
    stats = ticker.stats
    assert stats.timed_ticks == 3 and observed == pytest.approx([0.007] * 3)
    assert list(stats.step_seconds) == pytest.approx([0.004] * 3) and stats.step_seconds_sum == pytest.approx(0.012)
    assert stats.last_tick_seconds == pytest.approx(0.007) and stats.tick_seconds_sum == pytest.approx(0.021)
    timing = stats.last_timing  # where the 5 ms hand-back went: 1 ms queued, the 4 ms step, nothing after it
    assert (timing.queued, timing.advance) == pytest.approx((0.001, 0.004))
    assert timing.after == 0.0 and timing.returned == 0.0 and timing.advance_cpu >= 0.0


class _HandBack:
    """A reactor stand-in that collects what the room's thread hands back."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, fn, *args):  # noqa: N802 (twisted API name)
        self.calls.put((fn, args))

    def take(self, n: int) -> None:
        for _ in range(n):
            fn, args = self.calls.get(timeout=10)
            fn(*args)


def test_a_room_thread_runs_jobs_in_order_off_the_calling_thread_and_hands_back_results_and_failures():
    reactor = _HandBack()
    worker = RoomThread(reactor, "room-t")
    got: list = []
    for i in range(3):
        worker.run(lambda i=i: (i, threading.current_thread().name)).addCallback(got.append)
    worker.run(lambda: 1 / 0).addErrback(lambda f: got.append(f.type))
    reactor.take(4)
    worker.stop()
    assert got == [(0, "room-t"), (1, "room-t"), (2, "room-t"), ZeroDivisionError]
    assert not worker.running


def test_a_room_thread_shortens_the_processes_gil_switch_interval_and_names_its_os_thread(monkeypatch):
    monkeypatch.setattr(sys, "getswitchinterval", lambda: 0.005)  # CPython's default, whatever ran before
    set_to = []
    monkeypatch.setattr(sys, "setswitchinterval", set_to.append)
    reactor = _HandBack()
    worker = RoomThread(reactor, "room-gil")
    names = []
    worker.run(lambda: names.append(Path("/proc/thread-self/comm").read_text().strip()))
    reactor.take(1)
    worker.stop()
    assert set_to == [ROOM_SWITCH_INTERVAL] and ROOM_SWITCH_INTERVAL < 0.005
    if sys.platform == "linux":
        assert names == ["room-gil"]


def test_after_step_runs_after_the_step_with_the_reactors_context_and_its_result_is_taken_once(room):
    """``before_step`` on the reactor when the step is handed over, ``after_step(report, context)`` after the step on
    the room's thread (a real RoomThread here), its result ``prepared`` for ``on_report``; a failing hook costs the
    tick only its prepared work."""
    reactor = _HandBack()
    worker = RoomThread(reactor, "room-h")
    order, taken = [], []
    ticker = RoomTicker(Clock(), room, pool=worker)
    ticker.on_report = lambda r, rep: taken.append(ticker.take_prepared())
    ticker.before_step = lambda: order.append(("before", threading.current_thread().name, room.frame)) or room.frame

    def after(report, context):
        order.append(("after", threading.current_thread().name, room.frame))
        if context == 1:
            raise ValueError("prepared work failed")
        return ("prepared", context, report is not None)

    ticker.after_step = after
    for _ in range(3):
        ticker.tick()
        reactor.take(1)
    worker.stop()
    assert order == [
        ("before", "MainThread", 0),
        ("after", "room-h", 1),
        ("before", "MainThread", 1),
        ("after", "room-h", 2),
        ("before", "MainThread", 2),
        ("after", "room-h", 3),
    ]
    assert taken == [("prepared", 0, True), None, ("prepared", 2, True)]
    assert ticker.take_prepared() is None and ticker.stats.steps == 3
    assert room.counters["after_step_failed"] == 1
