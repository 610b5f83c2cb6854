"""The load runs' tick recorder: a tick observer of the server that writes records read_ticks reads back."""

from types import SimpleNamespace

import numpy as np

from loadtests.instrument import TickRecorder, read_ticks


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
