import math

import numpy as np
import pytest

from physics import InstrumentInput, Solver
from physics.instruments import grasper, look_rotation, needle_driver, scissors
from physics.needle import TIP_REACH, NeedleSpec, first_crossing, grip_region, tip_candidates, touch_tip
from physics.topology import split_along_faces
from tests.physics.suture_setup import DRIVER, drive_stitch, make_bench


def kinds(events):
    return [e.kind for e in events]


def test_a_full_pass_punctures_exits_and_places_a_stitch_across_the_centre():
    bench = make_bench()
    events = drive_stitch(bench)
    assert kinds(events).count("puncture") == 1
    assert "needle_exit" in kinds(events) and "stitch" in kinds(events)
    puncture = next(e for e in events if e.kind == "puncture")
    assert puncture.detail["force"] >= bench.needle.threshold(0)
    stitch = bench.needle.passes[0]
    entry, exit_ = stitch.entry.position(bench.state.x), stitch.exit.position(bench.state.x)
    cx = bench.centre[0]
    assert entry[0] < cx - 0.004 and exit_[0] > cx + 0.004  # in on one side of the centre, out on the other
    assert abs(entry[1] - bench.top) < 0.003 and abs(exit_[1] - bench.top) < 0.003
    assert not bench.needle.punctured and bench.needle.holder == DRIVER
    assert np.isfinite(bench.state.x).all()


def test_a_threshold_the_tip_cannot_reach_keeps_the_surface_whole():
    bench = make_bench(NeedleSpec(radius=0.008, puncture_force={0: 1e3}))
    for _ in range(40):
        bench.lower += 0.0002
        events = bench.frame()
        assert "puncture" not in kinds(events)
    assert bench.needle.tip_force > 0.05  # pressing, and the force grew with the dimple
    assert not bench.needle.punctured


def test_a_teleport_through_the_tissue_is_clamped_at_the_surface():
    bench = make_bench(NeedleSpec(radius=0.008, puncture_force={0: 1e3}))
    bench.frame()
    bench.lower = 0.012  # the tip would end 1 cm inside the block in one frame
    events = bench.frame()
    clamped = [e for e in events if e.kind == "pose_clamped"]
    assert clamped and clamped[0].detail["reason"] == "needle_tunnel"
    assert bench.needle.tip()[1] > bench.top - 0.003


def test_in_tissue_a_sideways_pose_is_clamped_to_a_turn_about_the_needle_axis():
    bench = make_bench()
    for _ in range(60):
        bench.lower += 0.0002
        bench.frame()
        if bench.needle.punctured:
            break
    assert bench.needle.punctured
    for _ in range(10):
        bench.alpha += 0.01
        bench.frame()
    centre = bench.needle.position.copy()
    bench.shift = np.array([0.0, 0.0, 0.008])  # 8 mm out of the arc's plane
    events = bench.frame()
    assert any(e.kind == "pose_clamped" and e.detail["reason"] == "needle_sideways" for e in events)
    assert np.linalg.norm(bench.needle.position - centre) < 1e-9


def test_another_instrument_closing_its_jaws_on_the_needle_takes_it():
    bench = make_bench()
    bench.frame()
    mid = bench.needle.world(bench.needle.spec.local_point(bench.needle.spec.arc_angle * 0.5))
    down = np.array([0.0, 0.0, -1.0])
    hinge = mid - down * 0.005
    q = look_rotation(down)
    bench.frame(extra=[InstrumentInput(3, grasper(), hinge, q, 0.8)])
    events = bench.frame(extra=[InstrumentInput(3, grasper(), hinge, q, 0.0)])
    handoff = [e for e in events if e.kind == "needle_grasp"]
    assert handoff and handoff[0].instrument == 3 and handoff[0].detail == {"from": DRIVER}
    assert bench.needle.holder == 3
    events = bench.frame(jaw=0.6, extra=[InstrumentInput(3, grasper(), hinge, q, 0.0)])
    assert bench.needle.holder == 3  # the old holder opening does not drop it
    events = bench.frame(jaw=0.6, extra=[InstrumentInput(3, grasper(), hinge, q, 0.7)])
    assert "needle_release" in kinds(events) and bench.needle.holder is None
    events = bench.frame(jaw=0.0, extra=[InstrumentInput(3, grasper(), hinge, q, 0.7)])
    assert kinds(events) == ["needle_grasp"] and bench.needle.holder == DRIVER  # the driver takes it back


def test_a_withdrawn_holder_lets_go_and_the_needle_stays():
    bench = make_bench()
    bench.frame()
    where = bench.needle.position.copy()
    bench.solver.step(bench.state, bench.control().__class__([]), 1 / 60, 5)
    events = bench.needle.step(bench.model, bench.state, 1 / 60)
    assert kinds(events) == ["needle_release"] and bench.needle.holder is None
    assert np.allclose(bench.needle.position, where)


def test_grip_regions_and_bad_specs():
    assert grip_region(needle_driver())[0] == pytest.approx(0.010)
    assert grip_region(grasper()) == (0.018, 0.004)
    assert grip_region(scissors()) is None
    with pytest.raises(ValueError, match="radius"):
        NeedleSpec(radius=math.nan)
    with pytest.raises(ValueError, match="puncture_force"):
        NeedleSpec(puncture_force={0: -1.0})


def test_first_crossing_finds_the_face_a_segment_enters():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    tris = np.array([[0, 2, 1]], dtype=np.int32)  # normal +y
    tri, t = first_crossing(x, tris, np.array([0.2, 1.0, 0.2]), np.array([0.2, -1.0, 0.2]), -1)
    assert tri == 0 and t == pytest.approx(0.5)
    assert first_crossing(x, tris, np.array([0.2, 1.0, 0.2]), np.array([0.2, -1.0, 0.2]), 1)[0] == -1
    assert first_crossing(x, tris, np.array([2.0, 1.0, 0.2]), np.array([2.0, -1.0, 0.2]), -1)[0] == -1


def test_a_bite_out_into_a_wound_ends_where_the_tip_goes_on_into_the_far_lip_without_shoving_it():
    """Out of the near lip's wall into a slit, the tip crosses the gap into the far lip: that bite is a pass (its
    tail not through yet, so the thread waits for it) and the far lip is punctured there; the lips stay put (the
    tip used to run through the far lip unchecked, and the press after the pass shoved it aside by the tip's depth:
    a 9 mm jump); turning on, the needle drags only the far lip's tissue, not the first bite's."""
    from physics import Control, Solver, build_model, new_state
    from physics.incision import slit
    from physics.instruments import matrix_to_quat
    from physics.materials import MUSCLE
    from physics.needle import Needle
    from physics.procedural import tissue_block, vertices_in_box
    from physics.suture_thread import Thread, ThreadSpec
    from tests.physics.suture_setup import DT, rot_z

    inc = slit(tissue_block(size=(0.06, 0.02, 0.04), cells=(12, 4, 8)), 0.0, 0.01, (-0.015, 0.015), gape=0.002)
    fixed = vertices_in_box(inc.mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(inc.mesh, [MUSCLE], fixed=fixed)
    state, solver = new_state(model), Solver(model)
    spec = NeedleSpec(radius=0.008)
    h = math.sqrt(spec.radius**2 - 0.005**2)  # entry and exit 5 mm either side of the slit
    centre = np.array([0.0, 0.02 + h, -0.005])
    R0 = rot_z(math.pi + math.asin(h / spec.radius) - 0.02 - spec.arc_angle)
    needle = Needle(spec, model, centre, matrix_to_quat(R0), holder=DRIVER)
    thread = Thread(ThreadSpec(segments=30), needle.tail())
    lips = np.concatenate([inc.left_edge, inc.right_edge])
    alpha = lower = 0.0
    kinds, worst, after = [], 0.0, 0
    near = inc.left_edge[np.abs(model.rest_positions[inc.left_edge, 2] + 0.005) < 0.003]  # the first bite's lip
    for _ in range(200):
        if not needle.punctured and not needle.passes:
            lower += 0.0002
        else:
            alpha += 0.02
        R = rot_z(alpha) @ R0  # the driver's shaft along the needle's axis, its jaws on the tail (the room's grip)
        p = centre - np.array([0.0, lower, 0.0]) + R @ np.array([spec.radius, 0.0, -0.005])
        solver.step(state, Control([InstrumentInput(DRIVER, needle_driver(), p, matrix_to_quat(R))]), DT, 10)
        events = needle.step(model, state, DT)
        events += thread.step(model, state, needle, DT)
        kinds += [(e.kind, e.detail.get("reentry", False), e.detail.get("side")) for e in events]
        if needle.exit is None or not needle.passes:
            worst = max(worst, float(np.linalg.norm(state.x[lips] - model.rest_positions[lips], axis=1).max()))
        else:  # the needle turned on through the far lip: the first bite's tissue is not dragged along with it
            after += 1
            if after == 30:
                break
    assert [k for k in kinds if k[0] in ("puncture", "needle_exit", "stitch")] == [
        ("puncture", False, None),
        ("needle_exit", False, None),  # out of the near lip's wall, into the slit
        ("stitch", True, None),  # the first bite, ended by the tip going on into the far lip
        ("puncture", True, None),
        ("needle_exit", False, None),  # out of the far lip's top
    ]
    first = needle.passes[0]
    assert not first.tail_through and first.entry_rest[0] < -0.003 and abs(first.exit_rest[0]) < 0.0015
    assert needle.entry is not None and abs(needle._entry_rest[0]) < 0.0015  # in at the far lip's wall
    assert ("threaded", False, "entry") not in kinds  # the tail is still short of the first bite's entry
    assert worst < 0.0015, f"a lip moved {worst * 1e3:.1f} mm during the pass"
    left = float(np.linalg.norm(state.x[near] - model.rest_positions[near], axis=1).max())
    assert after == 30 and left < 0.001, f"the first bite's lip was dragged {left * 1e3:.1f} mm"


def _split_at_x(bench, x0: float, z_max: float) -> int:
    """Open the block along the interior faces in the plane x = x0 (tets' centres z below z_max): a split cut
    that adds vertices (a fresh solver for the new mesh, as after a cut). Returns how many were added."""
    model = bench.model
    centres = model.rest_positions[model.tets].mean(axis=1)
    rows = []
    for t in range(model.n_tets):
        for f in range(4):
            u = model.neighbour[t, f]
            if u > t and (centres[t, 0] - x0) * (centres[u, 0] - x0) < 0 and centres[t, 2] < z_max:
                rows.append((t, f))
    n0 = model.n_vertices
    split_along_faces(model, bench.state, np.array(rows, dtype=np.int64))
    bench.solver = Solver(model)
    return model.n_vertices - n0


def test_a_needle_told_of_a_split_under_its_tip_punctures_the_new_surface_and_places_its_stitch():
    bench = make_bench()
    added = _split_at_x(bench, -0.01, 0.01)  # the side the tip presses (x = -7.7 mm) gets the new vertices
    assert added > 0
    bench.needle.notify_model_changed(bench.model)
    events = drive_stitch(bench)
    assert kinds(events).count("puncture") == 1 and "stitch" in kinds(events)
    assert bench.needle.passes[0].entry.position(bench.state.x)[0] < bench.centre[0] - 0.004
    assert np.isfinite(bench.state.x).all()


def test_the_same_needle_keeps_its_pass_across_a_split_mid_pass():
    bench = make_bench()
    for _ in range(200):
        bench.lower += 0.0002
        bench.frame()
        if bench.needle.punctured:
            break
    assert bench.needle.punctured
    entry = bench.needle.entry
    assert _split_at_x(bench, 0.015, 0.0) > 0  # a cut beside the pass
    bench.needle.notify_model_changed(bench.model)
    assert bench.needle.punctured and bench.needle.entry is entry and bench.needle.holder == DRIVER
    events = drive_stitch(bench)
    assert "puncture" not in kinds(events) and "stitch" in kinds(events)  # the same pass, completed
    assert bench.needle.passes[0].entry is entry


def test_a_needle_refuses_a_model_without_the_vertices_it_holds():
    bench = make_bench()
    events = drive_stitch(bench)
    assert "stitch" in kinds(events)
    small = make_bench(cells=(2, 2, 2)).model
    with pytest.raises(ValueError, match="vertices"):
        bench.needle.notify_model_changed(small)
    assert bench.needle.passes  # unchanged


def test_the_tips_broad_phase_finds_the_face_a_scan_of_every_face_finds_and_only_near_faces():
    bench = make_bench()
    model, x = bench.model, bench.state.x
    tris = model.surface
    table = bench.needle._surface_table(model)
    every = np.arange(tris.shape[0])
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(200):
        tip = rng.uniform([-0.03, 0.015, -0.02], [0.03, 0.022, 0.02])
        tangent = rng.normal(size=3)
        tangent[1] = -abs(tangent[1]) - 0.5
        near = tip_candidates(x, *table, tris.shape[0], tip)
        assert np.all(np.diff(near) > 0)  # ascending, no duplicates
        corner = np.min(np.linalg.norm(x[tris[near]] - tip, axis=2), axis=1)
        assert np.all(corner < TIP_REACH)
        far = np.setdiff1d(every, near)
        assert np.all(np.min(np.linalg.norm(x[tris[far]] - tip, axis=2), axis=1) >= TIP_REACH)
        hit = touch_tip(x, tris, near, tip, tangent, 0.0004)
        assert hit == touch_tip(x, tris, every, tip, tangent, 0.0004)
        found += hit[0] >= 0
    assert found > 20  # the tips near the top face touch it


def test_the_tip_made_once_per_pose_follows_a_needle_that_is_moved():
    needle = make_bench().needle
    tip, tangent = needle._tip_and_tangent()
    assert np.array_equal(tip, needle.tip()) and needle._tip_and_tangent()[0] is tip  # made once for this pose
    needle.position = needle.position + np.array([0.001, 0.0, 0.0])  # poses are replaced, never written in place
    moved, same = needle._tip_and_tangent()
    assert np.array_equal(moved, needle.tip()) and not np.array_equal(moved, tip) and np.array_equal(same, tangent)
