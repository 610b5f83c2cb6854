"""physics.trace_recorder: traces of the real engine in the documented npz format, readable without physics."""

from __future__ import annotations

import numpy as np
import pytest

from netcode.sync.recorded_trace import RecordedTrace
from physics import trace_recorder


def test_records_a_few_frames_of_the_block_scene(tmp_path):
    out = tmp_path / "block.npz"
    assert (
        trace_recorder.main(["--scene", "block", "--tets", "800", "--frames", "12", "--out", str(out), "--quiet"]) == 0
    )
    with np.load(out) as z:
        assert str(z["format"]) == trace_recorder.TRACE_FORMAT
        ids, pos = z["vertex_ids"], z["positions"]
        assert pos.shape == (12, len(ids), 3) and pos.dtype == np.float32 and np.all(np.isfinite(pos))
        assert z["epoch_frame"].tolist() == [0] and z["epoch_cause"].tolist() == ["full"]
        assert set(np.unique(z["epoch_triangles"]).tolist()) <= set(ids.tolist())
        assert z["rigid_present"].shape == (12, 3) and z["rigid_present"][:, 0].sum() > 0
        assert np.allclose(np.linalg.norm(z["rigid_orientations"][z["rigid_present"]], axis=1), 1.0)
        assert np.all(np.isnan(z["rigid_jaws"][:, 2]))  # the cautery hook has no jaw
    trace = RecordedTrace(out, clients=2)
    assert trace.frames == 12 and trace.name == "block_cut_cautery"
    # it starts settled, as a room opens: before the grasper arrives (frame 10) the tissue lies still
    assert trace.info["settled"]["reason"] == "rest" and trace.info["settled"]["frames"] > 0  # no time limit
    assert "rest" in trace.info["phases"] and "settle" not in trace.info["phases"]
    steps = np.abs(np.diff(pos[:10].astype(np.float64), axis=0)).max()
    assert steps < 1e-3 / 60  # the rest test, i.e. 1/120 mm a frame (with float32 rounding)
    old = tmp_path / "old.npz"
    argv = ["--scene", "block", "--tets", "800", "--frames", "12", "--no-settle", "--out", str(old), "--quiet"]
    assert trace_recorder.main(argv) == 0
    with np.load(old) as z:
        fall = np.abs(np.diff(z["positions"][:10].astype(np.float64), axis=0)).max()
    assert RecordedTrace(old, clients=1).info["settled"] is None
    assert fall > 20 * steps  # from the rest shape it falls, as traces used to start


@pytest.mark.slow
def test_block_script_grasps_cuts_and_burns(tmp_path):
    """The whole block script on a coarse mesh: a grasp, scissor cuts and a cautery burn, each a new epoch
    whose surface the trace lists, and the grasp ends."""
    out = tmp_path / "block.npz"
    assert trace_recorder.main(["--scene", "block", "--tets", "1500", "--out", str(out), "--quiet"]) == 0
    trace = RecordedTrace(out, clients=1)
    kinds = [k for _, k, _ in trace.events]
    assert "grasp" in kinds and "cut" in kinds and "burn" in kinds
    assert "release" in kinds or "tear" in kinds  # a coarse mesh may tear out of the jaws first
    causes = [e.cause for e in trace.epochs]
    assert causes[0] == "full" and "cut" in causes and "burn" in causes
    for before, after in zip(trace.epochs, trace.epochs[1:], strict=False):
        assert len(after.removed) or len(after.added)
        assert not np.array_equal(before.triangles, after.triangles)
    assert trace.grasp_points.shape == (1, 3)
