"""The suture trace is recorded from the physics: a press, a stitch through the tissue, a pull of the thread."""

from __future__ import annotations

import numpy as np
import pytest

from netcode.sync import thread_bench
from rehearsal.suture_trace import FORMAT, main, record


@pytest.mark.slow
def test_a_recorded_stitch_and_pull_replays_through_the_thread_bench(tmp_path):
    trace = record(segments=60, pull_frames=30)
    assert str(trace["format"]) == FORMAT and int(trace["stitches"]) == 1
    points, phase = trace["points"], trace["phase"]
    assert points.shape[1:] == (61, 3) and np.isfinite(points).all()
    assert set(phase.tolist()) == {0, 1, 2} and (phase == 2).sum() == 30
    pull = points[phase == 2]
    assert np.abs(pull[-1] - pull[0]).max() > 0.01  # the pull moved the thread by centimetres
    result = thread_bench.run(points, phase, float(trace["dt"]), clients=1, loss=0.02, rtt=0.1, seed=1)
    assert result["max_error_shown_m"] <= result["max_error_m"] and result["lossy"]["missing_baselines"] == 0


def test_the_command_needs_an_output_file():
    with pytest.raises(SystemExit):
        main([])
