"""The load runs' tick recorder: a tick observer of the server that writes records read_ticks reads back."""

import gc
from types import SimpleNamespace

import numpy as np

from loadtests.instrument import GC_COLUMNS, STEP_COLUMNS, TickRecorder, read_collections, read_steps, read_ticks
from loadtests.server import ServerGroup, gc_summary, lineup_summary, step_summary
from rehearsal.ticking import StepTiming


def test_tick_records_round_trip_through_the_tick_file(tmp_path):
    observers, triggers = [], []
    server = SimpleNamespace(
        add_tick_observer=observers.append,
        reactor=SimpleNamespace(addSystemEventTrigger=lambda phase, event, fn: triggers.append((phase, event, fn))),
    )
    recorder = TickRecorder(tmp_path)
    recorder.attach(server)
    assert observers == [recorder.observe] and triggers[0][:2] == ("before", "shutdown")
    observers[0]("s-a", 0.004, 0.001)
    observers[0]("s-b", 0.006, 0.002)
    observers[0]("s-a", 0.005, 0.003)
    assert read_ticks(tmp_path).shape == (0, 4)  # kept in memory until a flush
    triggers[0][2]()  # the reactor stops
    ticks = read_ticks(tmp_path)
    assert ticks.shape == (3, 4)
    np.testing.assert_allclose(ticks[:, 1], [0.005, 0.008, 0.008])  # hand-back + publishing
    assert ticks[:, 2].tolist() == [0.0, 1.0, 0.0]  # room numbers by first appearance
    np.testing.assert_allclose(ticks[:, 3], [0.001, 0.002, 0.003])


def test_step_records_carry_the_tickers_timing_of_each_room(tmp_path):
    timing = StepTiming(queued=0.001, advance=0.004, advance_cpu=0.003, after=0.002, after_cpu=0.001, returned=0.0005)
    live = SimpleNamespace(ticker=SimpleNamespace(stats=SimpleNamespace(last_timing=timing)))
    observers = []
    server = SimpleNamespace(
        add_tick_observer=observers.append,
        reactor=SimpleNamespace(addSystemEventTrigger=lambda *_: None),
        sessions=SimpleNamespace(rooms={"s-a": live}),
    )
    recorder = TickRecorder(tmp_path)
    recorder.attach(server)
    observers[0]("s-a", 0.008, 0.001)
    observers[0]("s-gone", 0.008, 0.001)  # a room already closed: a tick record, no step record
    recorder.flush()
    steps = read_steps(tmp_path)
    assert steps.shape == (1, len(STEP_COLUMNS)) and read_ticks(tmp_path).shape == (2, 4)
    row = dict(zip(STEP_COLUMNS, steps[0].tolist(), strict=True))
    assert row["room"] == 0.0
    assert (row["queued"], row["advance"], row["advance_cpu"]) == (0.001, 0.004, 0.003)
    assert (row["after"], row["after_cpu"], row["returned"]) == (0.002, 0.001, 0.0005)
    summary = step_summary(steps)
    assert summary["steps"] == 1 and summary["advance_stall"]["p50_ms"] == 1.0  # 4 ms wall, 3 ms CPU
    recorder.detach()


def test_the_servers_garbage_collections_are_timed_by_generation_until_detached(tmp_path):
    server = SimpleNamespace(
        add_tick_observer=lambda _: None, reactor=SimpleNamespace(addSystemEventTrigger=lambda *_: None)
    )
    recorder = TickRecorder(tmp_path)
    recorder.attach(server)
    try:
        gc.collect(1)
        gc.collect(2)
    finally:
        recorder.detach()
    gc.collect(0)  # after detach: not recorded
    rows = read_collections(tmp_path)
    assert rows.shape == (2, len(GC_COLUMNS)) and rows[:, 1].tolist() == [1.0, 2.0] and (rows[:, 2] >= 0).all()
    summary = gc_summary(rows)
    assert summary["gen1"]["count"] == 1 and summary["gen2"]["count"] == 1 and summary["gen0"]["count"] == 0
    assert summary["gen2"]["max_ms"] == summary["gen2"]["total_ms"] > 0
    assert gc_summary(rows, rows[-1, 0] + 1, rows[-1, 0] + 2)["gen2"]["count"] == 0


def test_lineup_counts_other_rooms_of_the_same_process_in_flight_at_each_hand_over():
    # (end, seconds, room, publish): room 0 busy [0, 10) and [20, 24); room 1 handed over at 5 (inside room 0's
    # first tick) and at 12 (nobody out); room 1000 (another process) at 6, overlapping both: not counted.
    ticks = np.array(
        [[10, 10, 0, 0], [24, 4, 0, 0], [8, 3, 1, 0], [14, 2, 1, 0], [9, 3, ServerGroup.ROOMS_PER_PROCESS, 0]]
    )
    summary = lineup_summary(ticks.astype(float))
    assert summary["ticks"] == 5 and summary["others_in_flight_max"] == 1
    assert summary["lined_up_share"] == 0.2  # room 1's tick handed over at 5 only
    assert lineup_summary(ticks.astype(float), 100, 200) == {}
