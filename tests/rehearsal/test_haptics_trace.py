"""The grasp-and-pull force trace recorder: the engine's force grows against the pull."""

import json

import numpy as np

from rehearsal.haptics_trace import main, record


def test_a_short_pull_records_a_growing_restoring_force(tmp_path):
    trace = record(speed=0.012, ticks=12)
    positions, forces = np.array(trace["positions"]), np.array(trace["forces"])
    assert positions.shape == forces.shape == (12, 3)
    assert positions[-1, 1] > positions[0, 1]  # pulled up
    assert forces[-1, 1] < forces[0, 1] < 0  # the tissue pulls back down, harder the further it is pulled
    out = tmp_path / "trace.json"
    assert main([str(out), "--ticks", "3"]) == 0
    assert json.loads(out.read_text())["meta"]["ticks"] == 3
