"""Reading recorded traces (``netcode.sync.recorded_trace``) and the snapshot benchmark replaying one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from netcode.sync import snapshot_bench
from netcode.sync.recorded_trace import HEAD_BASE, TRACE_FORMAT, RecordedTrace, TraceError

N = 12
FRAMES = 24
CUT = 12


def grid_triangles(n: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).ravel()
    return np.concatenate([np.stack([a, a + 1, a + n], 1), np.stack([a + 1, a + n + 1, a + n], 1)])


def write_trace(path, **override) -> dict:
    """A small trace in the recorder's format: a 12 x 12 sheet that bulges, a cut at frame 12 that
    removes the triangles of one row, a grasper (with a jaw) and a cautery hook (without)."""
    u = np.linspace(0, 0.03, N)
    x, z = np.meshgrid(u, u, indexing="ij")
    rest = np.stack([x.ravel(), np.zeros(N * N), z.ravel()], 1)
    bump = np.exp(-np.sum((rest - rest[N * N // 2]) ** 2, axis=1) / (2 * 0.006**2))
    positions = np.stack([rest + bump[:, None] * [0, 0.0004 * f, 0] for f in range(FRAMES)]).astype(np.float32)
    tris = grid_triangles(N)
    cut = np.any((tris // N) == 5, axis=1) & np.any((tris // N) == 6, axis=1)
    after = tris[~cut]
    present = np.ones((FRAMES, 2), bool)
    present[:4, 1] = False
    quat = np.tile([0.0, 0.0, 0.0, 1.0], (FRAMES, 2, 1))
    data = {
        "format": np.array(TRACE_FORMAT),
        "scene": np.array("sheet"),
        "info": np.array(json.dumps({"phases": {"bulge": [0, CUT], "cut": [CUT, FRAMES]}})),
        "hz": np.array(60.0),
        "vertex_ids": np.arange(N * N, dtype=np.int32),
        "positions": positions,
        "epoch_frame": np.array([0, CUT], np.int32),
        "epoch_cause": np.array(["full", "cut"]),
        "epoch_instrument": np.array([-1, 1], np.int32),
        "epoch_tri_offsets": np.array([0, len(tris), len(tris) + len(after)]),
        "epoch_triangles": np.concatenate([tris, after]).astype(np.int32),
        "change_removed_offsets": np.array([0, 0, int(cut.sum())]),
        "change_removed": tris[cut].astype(np.int32),
        "change_added_offsets": np.array([0, len(tris), len(tris)]),
        "change_added": tris.astype(np.int32),
        "rigid_ids": np.array([0, 2], np.int32),
        "rigid_kinds": np.array(["grasper", "cautery_hook"]),
        "rigid_present": present,
        "rigid_positions": np.tile([0.015, 0.01, 0.015], (FRAMES, 2, 1)),
        "rigid_orientations": quat,
        "rigid_jaws": np.stack([np.full(FRAMES, 0.3), np.full(FRAMES, np.nan)], 1),
        "rigid_energy": np.zeros((FRAMES, 2), bool),
        "grasp_frame": np.array([3], np.int32),
        "grasp_instrument": np.array([0], np.int32),
        "grasp_point": np.array([[0.015, 0.0, 0.015]]),
        "event_frame": np.array([3, CUT], np.int32),
        "event_kind": np.array(["grasp", "cut"]),
        "event_instrument": np.array([0, 1], np.int32),
    }
    data.update(override)
    np.savez_compressed(path, **data)
    return data


def test_trace_file_reads_back_per_frame(tmp_path):
    path = tmp_path / "sheet.npz"
    data = write_trace(path)
    trace = RecordedTrace(path, clients=3)
    assert trace.name == "sheet" and trace.frames == FRAMES and trace.hz == 60.0
    assert np.array_equal(trace.positions(5), data["positions"][5].astype(np.float64))
    assert [e.frame for e in trace.epochs] == [0, CUT] and trace.epochs[1].cause == "cut"
    assert len(trace.epochs[1].surface_ids) == N * N and len(trace.epochs[1].removed) == len(data["change_removed"])
    assert trace.epoch_at(CUT - 1).frame == 0 and trace.epoch_at(CUT).frame == CUT
    early, late = trace.rigid(2), trace.rigid(10)
    assert early.ids.tolist() == [0, HEAD_BASE, HEAD_BASE + 1, HEAD_BASE + 2]  # the hook is not in yet
    assert late.ids.tolist()[:2] == [0, 2] and np.isnan(late.jaws[1]) and late.jaws[0] == pytest.approx(0.3)
    late.validate()
    assert trace.focus(10, 1).shape == (2, 3) and np.allclose(trace.focus(10, 1)[1], data["grasp_point"][0])
    assert RecordedTrace(path, clients=1, frames=8).frames == 8


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": np.array("surgical-trace/0")}, "format"),
        ({"positions": np.zeros((FRAMES, 5, 3), np.float32)}, "do not match"),
        ({"positions": np.full((FRAMES, N * N, 3), np.nan, np.float32)}, "non-finite"),
        ({"epoch_frame": np.array([2, CUT], np.int32)}, "frame 0"),
        ({"rigid_ids": np.array([0, HEAD_BASE], np.int32)}, "below"),
        ({"epoch_tri_offsets": np.array([0])}, "malformed"),
    ],
)
def test_bad_trace_files_raise_trace_error(tmp_path, change, message):
    path = tmp_path / "bad.npz"
    write_trace(path, **change)
    with pytest.raises(TraceError, match=message):
        RecordedTrace(path, clients=1)


def test_not_an_npz_raises_trace_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(TraceError, match="readable"):
        RecordedTrace(path, clients=1)


def test_bench_replays_a_recorded_trace(tmp_path, capsys):
    path = tmp_path / "sheet.npz"
    write_trace(path)
    argv = ["--trace", str(path), "--no-generated", "--clients", "2", "--late-join-s", "0.1", "--draco-every", "6"]
    assert snapshot_bench.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    run = doc["traces"]["sheet"]
    unlimited, budgeted = run["unlimited"], run["budgeted"]
    assert unlimited["topology_messages"] == 1 and unlimited["topology_bytes_per_message"] > 0
    assert unlimited["bits_per_vertex_per_frame"] > unlimited["bits_per_vertex_per_frame_snapshots"] > 0
    assert doc["codec"]["moving_error_mm"] == 0.5  # moving patches are sent within 0.5 mm, settled ones 0.1
    assert unlimited["max_error_quantization_mm"] <= 0.5 + 1e-9
    assert (
        budgeted["bytes_over_budget_max_over_any_frames"]
        <= budgeted["burst_bytes"]
        == budgeted["budget_bytes_per_frame"]
    )
    assert set(unlimited["phases"]) == {"bulge", "cut"}
    assert budgeted["late_joiner"]["join_frame"] == 6 and budgeted["late_joiner"]["converged_s"] is not None
    assert unlimited["snapshots_rejected"] == 0
    assert doc["summary"]["unlimited.bits_per_vertex_per_frame"]["sheet"] == unlimited["bits_per_vertex_per_frame"]
    assert set(run["goal"]) >= {"at_most_1_bit_per_vertex_per_frame", "late_joiner_converged_within_0_5_s"}


def test_bench_refuses_a_bad_trace(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    write_trace(path, format=np.array("other"))
    assert snapshot_bench.main(["--trace", str(path), "--no-generated"]) == 2
    assert "format" in capsys.readouterr().err
