"""ServerGroup: the tick records of one process per room, measured as one run."""

from types import SimpleNamespace

import numpy as np

from loadtests.server import ServerGroup, tick_summary


def _fake(ticks: np.ndarray, alive: bool = True) -> SimpleNamespace:
    return SimpleNamespace(ticks=lambda: ticks, proc=SimpleNamespace(poll=lambda: None if alive else 0))


def test_group_ticks_keep_each_process_rooms_apart():
    a = np.array([[1.0, 0.010, 0, 0.002], [2.0, 0.012, 0, 0.002]])
    b = np.array([[1.5, 0.030, 0, 0.004]])
    group = ServerGroup()
    group.add(_fake(a))
    group.add(_fake(b))
    ticks = group.ticks()
    assert ticks.shape == (3, 4) and sorted(ticks[:, 2].tolist()) == [0, 0, ServerGroup.ROOMS_PER_PROCESS]
    summary = tick_summary(ticks)
    assert summary["rooms"] == 2 and summary["ticks"] == 3 and summary["max_ms"] == 30.0
    assert a[0, 2] == 0, "the servers' own records are not changed"
    assert group.alive()
    group.add(_fake(a, alive=False))
    assert not group.alive()
    assert ServerGroup().ticks().shape == (0, 4)
