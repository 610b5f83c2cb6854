import math

import numpy as np
import pytest

from physics import Control, InstrumentInput, Solver, build_model, new_state
from physics.environment import Environment
from physics.incision import gap, slit
from physics.instruments import grasper, look_rotation
from physics.materials import Material
from physics.needle import NeedleSpec, TissuePoint
from physics.procedural import tissue_block, vertices_in_box
from physics.suture_thread import Thread, ThreadSpec, self_pairs, thread_candidates
from physics.suturing import HOLD_ID_BASE, Suturing
from tests.physics.suture_setup import make_bench, pull_up_through_point

SKIN = Material("skin", young=3e4, poisson=0.45, density=1000.0, strength=1e5)
DT = 1 / 60


def slit_world():
    mesh = tissue_block(size=(0.06, 0.02, 0.04), cells=(12, 4, 8))
    zc = float(mesh.vertices[:, 2].mean())
    top = float(mesh.vertices[:, 1].max())
    inc = slit(mesh, 0.0, 0.01, (zc - 0.015, zc + 0.015), gape=0.003)
    fixed = vertices_in_box(inc.mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(inc.mesh, [SKIN], fixed=fixed)
    return model, new_state(model), inc, zc, top


def top_vertex(x, top, xq, zc):
    cand = np.flatnonzero(np.abs(x[:, 1] - top) < 1e-9)
    return int(cand[np.argmin(np.abs(x[cand, 0] - xq) + np.abs(x[cand, 2] - zc))])


def test_pulling_both_limbs_across_a_stitch_draws_the_wound_edges_together():
    model, state, inc, zc, top = slit_world()
    solver = Solver(model)
    x = state.x
    e, xv = top_vertex(x, top, -0.005, zc), top_vertex(x, top, 0.005, zc)
    su = Suturing(model, NeedleSpec(), ThreadSpec(segments=40), np.array([0.0, 0.1, 0.0]), np.array([1.0, 0, 0, 0]))
    th = su.thread
    pts = [np.array([-0.005, top + 0.03 - 0.003 * i, zc]) for i in range(11)]
    pts += [x[e] + (x[xv] - x[e]) * i / 7 - np.array([0, 0.004 * math.sin(math.pi * i / 7), 0]) for i in range(1, 8)]
    pts += [x[xv] + np.array([0, 0.003 * i, 0]) for i in range(1, 24)]
    th.x = np.array(pts)
    th.pass_through(TissuePoint(np.array([e] * 3, np.int32), np.array([1.0, 0, 0])), 10.0, 0, "entry")
    th.pass_through(TissuePoint(np.array([xv] * 3, np.int32), np.array([1.0, 0, 0])), 17.0, 0, "exit")
    near = np.abs(x[inc.left_edge, 2] - zc) < 0.006
    left, right = inc.left_edge[near], inc.right_edge[near]
    before = gap(x, left, right)
    a0, b0 = th.x[0].copy(), th.x[-1].copy()
    q = look_rotation((0.0, -1.0, 0.0))
    for f in range(150):
        s = min(1.0, f / 90)
        hands = [
            InstrumentInput(1, grasper(), a0 + s * np.array([0.03, 0, 0]), q, 0.0),
            InstrumentInput(2, grasper(), b0 - s * np.array([0.03, 0, 0]), q, 0.0),
        ]
        su.before_step(state)
        report = solver.step(state, Control(hands + su.inputs()), DT, 10)
        if f == 0:
            th.grab(1, 0, state)
            th.grab(2, 40, state)
        su.after_step(model, state, report, DT)
    assert set(su.hold_ids()) == {HOLD_ID_BASE, HOLD_ID_BASE + 1}
    assert gap(state.x, left, right) < 0.85 * before  # the lips moved together
    assert np.linalg.norm(state.x[e] - state.x[xv]) < 0.7 * 0.010
    assert all(np.linalg.norm(s.force) > 0.005 for s in th.slides)  # the thread pulls at both holds
    assert th.tension() < 0.15 and np.isfinite(state.x).all() and np.isfinite(th.x).all()


def test_the_thread_follows_the_needle_through_its_stitch_and_slides_through_both_points():
    bench = make_bench()
    su = Suturing(bench.model, bench.needle.spec, ThreadSpec(segments=60), bench.needle.position,
                  bench.needle.orientation, holder=7)  # fmt: skip
    bench.needle = su.needle
    events = []
    for _ in range(700):
        if not su.needle.punctured and not su.needle.passes:
            bench.lower += 0.0002
        elif bench.alpha < 5.6:
            bench.alpha += 0.012
        su.before_step(bench.state)
        report = bench.solver.step(bench.state, bench.control(extra=su.inputs()), DT, 10)
        events += su.after_step(bench.model, bench.state, report, DT)
    threaded = [e.detail["side"] for e in events if e.kind == "threaded"]
    assert threaded == ["entry", "exit"]
    assert len(su.thread.slides) == 2
    exit_u = next(s.u for s in su.thread.slides if s.side == "exit")
    entry_u = next(s.u for s in su.thread.slides if s.side == "entry")
    assert 0.0 < exit_u < entry_u  # from the needle: out at the exit, in at the entry
    assert np.linalg.norm(su.thread.x[0] - su.needle.tail()) < 1e-9
    assert np.isfinite(su.thread.x).all()


def test_a_thread_dropped_on_a_table_rests_on_it_at_its_length():
    model, state, *_ = slit_world()
    model.environment = Environment.table(-0.001)
    th = Thread(ThreadSpec(segments=50), np.array([-0.08, 0.01, 0.0]), (-1.0, 0.0, 0.0))
    for _ in range(90):
        th.step(model, state, None, DT)
    assert th.x[:, 1].min() > -0.001 - 1e-6
    assert abs(th.length() - 50 * 0.003) < 0.01 * 0.15


def test_a_thread_lying_on_the_tissue_stays_on_its_surface():
    model, state, _inc, zc, top = slit_world()
    th = Thread(ThreadSpec(segments=12), np.array([-0.025, top + 0.001, zc + 0.017]), (1.0, 0.0, 0.0))
    for _ in range(60):
        th.step(model, state, None, DT)
    assert th.x[:, 1].min() > top - 0.0005
    assert th.counts["tissue_contacts"] > 0


def test_jaws_closing_on_the_thread_grab_it_and_opening_lets_go():
    model, state, *_ = slit_world()
    model.environment = Environment.table(0.0)
    solver = Solver(model)
    th = Thread(ThreadSpec(segments=20), np.array([-0.08, 0.0002, 0.0]), (-1.0, 0.0, 0.0))
    hinge = th.x[10] + np.array([0.0, 0.002, 0.0])
    q = look_rotation((0.0, -1.0, 0.0))
    kinds = []
    for jaw in (0.8, 0.0, 0.0, 0.7):
        solver.step(state, Control([InstrumentInput(4, grasper(), hinge, q, jaw)]), DT, 5)
        kinds += [e.kind for e in th.step(model, state, None, DT)]
    assert kinds == ["thread_grasp", "thread_release"]


def test_self_collision_keeps_crossing_strands_apart():
    th = Thread(ThreadSpec(segments=20, radius=0.0005), np.zeros(3), (1.0, 0.0, 0.0))
    model, state, *_ = slit_world()
    # a loop: the second half comes back across the first, 0.2 mm above it
    t = np.linspace(0, 1, 21)
    th.x = np.stack([0.2 + 0.03 * np.cos(2 * np.pi * t), 0.1 + 0.0002 * t, 0.01 * np.sin(2 * np.pi * t)], axis=1)
    th.x[15:, 0] = 0.2 + 0.03 * np.cos(2 * np.pi * t[15:])
    model.gravity = np.zeros(3)
    pairs_before = self_pairs(th.x, 0.0013)[0].size
    th.step(model, state, None, DT)
    assert pairs_before >= 0
    i, j = self_pairs(th.x, 0.0)
    for a, b in zip(i, j, strict=True):
        d = _segment_distance(th.x[a], th.x[a + 1], th.x[b], th.x[b + 1])
        assert d > 2 * 0.0005 * 0.9


def _segment_distance(p0, p1, q0, q1):
    s = np.linspace(0, 1, 41)
    a = p0 + s[:, None] * (p1 - p0)
    b = q0 + s[:, None] * (q1 - q0)
    return float(np.min(np.linalg.norm(a[:, None] - b[None], axis=2)))


def test_candidates_only_name_triangles_near_the_thread():
    model, state, _inc, zc, top = slit_world()
    xt = np.array([[0.0, top + 0.001, zc], [0.003, top + 0.001, zc]])
    start, tris = thread_candidates(xt, state.x, model.surface, 0.004)
    assert start[-1] == tris.size > 0
    centres = state.x[model.surface[tris]].mean(axis=1)
    assert np.linalg.norm(centres - xt[0], axis=1).min() < 0.01
    assert start.size == 3


def test_candidates_are_every_triangle_whose_centre_is_within_reach_plus_the_largest_triangle():
    model, state, *_ = slit_world()
    rng = np.random.default_rng(7)
    tris = model.surface
    for _ in range(20):
        x = state.x + rng.normal(0.0, 0.0005, state.x.shape)
        xt = rng.uniform(-0.03, 0.03, 3) + np.cumsum(rng.normal(0.0, 0.003, (int(rng.integers(2, 60)), 3)), axis=0)
        reach = float(rng.uniform(0.0, 0.008))
        start, found = thread_candidates(xt, x, tris, reach)
        corners = x[tris]
        centres = corners.sum(axis=1) / 3.0
        h = reach + math.sqrt(((corners - centres[:, None, :]) ** 2).sum(axis=2).max())
        for i, p in enumerate(xt):
            near = np.flatnonzero(((centres - p) ** 2).sum(axis=1) <= h * h)
            assert found[start[i] : start[i + 1]].tolist() == near.tolist()  # all of them, ascending


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="segments"):
        ThreadSpec(segments=0)
    with pytest.raises(ValueError, match="segment_length"):
        ThreadSpec(segment_length=math.inf)
    th = Thread(ThreadSpec(segments=5), np.zeros(3))
    with pytest.raises(ValueError, match="u must be"):
        th.pass_through(TissuePoint(np.zeros(3, np.int32), np.array([1.0, 0, 0])), 9.0, 0, "entry")


def test_a_thread_pulled_up_from_a_stitch_draws_its_slack_through_and_leaves_the_tissue_there():
    """A stitch is an eyelet: the thread lies slack along the top face from the needle to a stitch point and rises
    from it; pulled up, it slides through the point (the slack is drawn through) and the tissue stays put."""
    model, state, _, zc, top = slit_world()
    e = top_vertex(state.x, top, -0.01, zc)
    seg = ThreadSpec().segment_length
    th = pull_up_through_point(model, state, e)
    [slide] = th.slides
    # the thread's parameter at the point falls as the slack from the needle's side is drawn through it
    assert slide.u < 20.0 - 0.6 * 0.02 / seg, f"the thread slid {(20.0 - slide.u) * seg * 1e3:.1f} mm through the point"
    moved = float(np.linalg.norm(state.x[e] - model.rest_positions[e]))
    assert moved < 0.002, f"the stitch point was dragged {moved * 1e3:.1f} mm"
    assert np.isfinite(th.x).all()
