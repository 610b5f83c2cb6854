"""The thread sync benchmark replays a suture trace and prints its figures as JSON."""

from __future__ import annotations

import json

import numpy as np

from netcode.sync import thread_bench


def write_trace(path, frames: int = 40, n: int = 201) -> None:
    t = np.linspace(0.0, 0.6, n)
    points = np.stack(
        [
            np.stack([t + 0.002 * f, 0.01 * np.sin(20 * t + 0.05 * f), 0.02 * np.cos(7 * t)], axis=1)
            for f in range(frames)
        ]
    )
    phase = np.array([0] * 5 + [1] * 15 + [2] * (frames - 20), np.int8)
    np.savez(path, format=np.array("suture-trace/1"), points=points, phase=phase, dt=np.array(1 / 60))


def test_the_bench_prints_bytes_per_frame_within_the_bound(tmp_path, capsys):
    path = tmp_path / "suture.npz"
    write_trace(path)
    assert thread_bench.main(["--trace", str(path), "--clients", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 40 and out["segments"] == 200
    assert 0 < out["bytes_per_frame"]["mean"] <= out["bytes_per_frame"]["max"]
    assert set(out["per_phase"]) == {"press", "stitch", "pull"}
    assert out["max_error_shown_m"] <= out["max_error_m"]
    assert out["lossy"]["missing_baselines"] == 0
    assert out["kbit_per_s"] > 0


def test_a_file_that_is_not_a_trace_is_refused(tmp_path, capsys):
    path = tmp_path / "other.npz"
    np.savez(path, points=np.zeros((2, 3, 3)))
    assert thread_bench.main(["--trace", str(path)]) == 2
    assert "not a suture-trace/1" in capsys.readouterr().err
