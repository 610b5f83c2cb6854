"""Cutting the suture thread (physics/thread_cut.py, wired in physics/suturing.py): which segments closing blades
cross, the split of a thread and its stitch points, the mentor's refusals, and a tied stitch cut off the needle,
frozen, holding its points and following the tissue."""

import numpy as np
import pytest

from physics import Control, InstrumentInput, Solver
from physics.instruments import matrix_to_quat, scissors
from physics.knots import classify_knot
from physics.needle import NeedleSpec, TissuePoint
from physics.suture_thread import Slide, ThreadSpec
from physics.suturing import HOLD_ID_BASE, Suturing
from physics.thread_cut import (
    MAX_THREADS,
    CutPlan,
    CutRefusal,
    FrozenThread,
    crossed_segments,
    plan_cut,
    split_thread,
)
from tests.physics.suture_setup import ACROSS_X, STITCH_SEG, knot_world, knotted_stitch

DT = 1 / 60
SEG = STITCH_SEG
SCISSORS = 5
ACROSS_Y = np.eye(3)  # blades along +z, their plane across a thread along world y


def slide(u: float, stitch: int = 0, side: str = "entry", vertex: int = 0) -> Slide:
    return Slide(TissuePoint(np.full(3, vertex, np.int32), np.array([1.0, 0.0, 0.0])), u, stitch, side, np.zeros(3))


def test_closing_blades_cross_the_segments_across_their_plane_within_reach_and_between_them():
    y = np.linspace(-0.01, 0.01, 10)
    line = np.stack([np.zeros(10), y, np.full(10, 0.008)], axis=1)  # crosses the blade plane 8 mm ahead
    segs, t = crossed_segments(line, np.zeros(3), ACROSS_Y, 0.6, 0.0, 0.016)
    assert segs.tolist() == [4] and t[0] == pytest.approx(0.5)  # the segment through y = 0, at its middle
    assert crossed_segments(line, np.zeros(3), ACROSS_Y, 0.0, 0.6, 0.016)[0].size == 0  # opening cuts nothing
    far = line + np.array([0.0, 0.0, 0.012])  # 2 cm ahead: past the 16 mm blades
    assert crossed_segments(far, np.zeros(3), ACROSS_Y, 0.6, 0.0, 0.016)[0].size == 0
    aside = line + np.array([0.008 * np.tan(0.5), 0.0, 0.0])  # 0.5 rad off the axis: outside blades opened 0.6 rad
    assert crossed_segments(aside, np.zeros(3), ACROSS_Y, 0.6, 0.0, 0.016)[0].size == 0
    assert crossed_segments(aside, np.zeros(3), ACROSS_Y, 1.2, 0.0, 0.016)[0].size == 1  # wider: it is cut


def test_a_split_keeps_every_particle_once_and_moves_each_stitch_point_to_its_side():
    x = np.arange(30.0).reshape(10, 3)
    v = -x
    near, far = slide(1.5, 0, "entry"), slide(6.25, 1, "exit")
    far.held = 6.5
    first, second = split_thread(x, v, [near, far], 4)
    np.testing.assert_array_equal(np.concatenate([first.x, second.x]), x)
    np.testing.assert_array_equal(np.concatenate([first.v, second.v]), v)
    assert [s.u for s in first.slides] == [1.5] and first.slides[0] is near
    assert [s.u for s in second.slides] == [pytest.approx(1.25)] and second.slides[0].held == pytest.approx(1.5)
    assert far.u == 6.25  # the original is untouched (a pure function)
    with pytest.raises(ValueError, match="segment 6"):
        split_thread(x, v, [slide(6.5)], 6)


def test_the_mentors_rules_a_cut_above_the_knot_leaves_a_tail_below_it_is_refused():
    pts, ue, ux = knotted_stitch(np.array([0.0, 0.0, 0.0]), np.array([0.006, 0.0, 0.0]))
    knot = classify_knot(pts, 0.01)
    assert knot.kind == "square" and knot.tight
    slides = [slide(ux, 0, "exit"), slide(ue, 0, "entry")]
    above = plan_cut(pts, slides, 2, 0.5, knot, live=True)  # on the lead from the needle, 5 mm before the knot
    assert isinstance(above, CutPlan) and above.kept == "second" and above.freed == (0,) and above.tied
    assert 0.005 < above.tail < 0.012  # 5 mm of lead, then to where the thread enters the knot's ball
    closer = plan_cut(pts, slides, 3, 0.5, knot, live=True)  # one segment closer, along the straight lead
    step = 0.5 * (np.linalg.norm(pts[3] - pts[2]) + np.linalg.norm(pts[4] - pts[3]))
    assert closer.tail == pytest.approx(above.tail - step, abs=1e-9)
    below = plan_cut(pts, slides, int(ue) - 4, 0.5, knot, live=True)  # on the way down to the entry
    assert below == CutRefusal("below_knot", int(ue) - 4)
    assert plan_cut(pts, slides, int(ue) + 1, 0.5, knot, live=True).reason == "in_tissue"  # between the bites
    assert plan_cut(pts, [], 2, 0.5, knot, live=True).reason == "no_stitch"  # the needle off before any stitch
    assert plan_cut(pts, slides, 0, 0.5, knot, live=True).reason == "too_short"
    untied = plan_cut(pts, slides, int(ue) - 4, 0.5, None, live=True)  # no knot: frozen as it lies, untied
    assert isinstance(untied, CutPlan) and not untied.tied and untied.tail is None
    trim = plan_cut(pts, slides, int(ux) + 5, 0.5, None, live=True)  # the free tail past the exit: dropped
    assert isinstance(trim, CutPlan) and trim.kept is None and trim.freed == ()


def stitched(model, state) -> tuple[Suturing, np.ndarray]:
    """A Suturing whose thread runs from the needle through a tight knot 2 cm up, down into two top vertices of the
    block (the stitch) and up again (the needle lying still; no gravity)."""
    top = state.x[:, 1].max()
    on_top = np.flatnonzero(state.x[:, 1] >= top - 1e-9)
    e = int(on_top[np.argmin(np.linalg.norm(state.x[on_top] - [-0.005, top, 0.0], axis=1))])
    x_ = int(on_top[np.argmin(np.linalg.norm(state.x[on_top] - [0.005, top, 0.0], axis=1))])
    pts, ue, ux = knotted_stitch(state.x[e], state.x[x_])
    spec = NeedleSpec()
    n = pts.shape[0]
    su = Suturing(model, spec, ThreadSpec(segments=n - 1, segment_length=SEG), pts[0] - [spec.radius, 0.0, 0.0],
                  np.array([1.0, 0.0, 0.0, 0.0]))  # fmt: skip
    su.thread.x = pts.copy()
    one = np.array([1.0, 0.0, 0.0])
    su.thread.pass_through(TissuePoint(np.full(3, e, np.int32), one), ue, 0, "entry")
    su.thread.pass_through(TissuePoint(np.full(3, x_, np.int32), one.copy()), ux, 0, "exit")
    return su, pts


def frame(su, model, state, solver, extra=()):
    control = Control([*extra, *su.inputs()])
    su.before_step(state)
    report = solver.step(state, control, DT, 10)
    return su.after_step(model, state, report, DT)


def test_scissors_cut_a_tied_stitch_off_the_needle_and_the_piece_stays_holding_its_points():
    model, state = knot_world()
    solver = Solver(model)
    su, pts = stitched(model, state)
    n = pts.shape[0]
    at = pts[2] + 0.5 * (pts[3] - pts[2])  # the lead from the needle, before the knot
    hinge = at - np.array([0.0, 0.0, 0.008])
    q = matrix_to_quat(ACROSS_X)
    holds = su.hold_ids()
    assert holds == [HOLD_ID_BASE, HOLD_ID_BASE + 1]
    events = frame(su, model, state, solver, [InstrumentInput(SCISSORS, scissors(), hinge, q, 0.8)])
    assert not [e for e in events if e.kind.startswith("thread_cut")]
    assert su.thread.counts["instrument_contacts"] == 0  # open blades around the thread do not push it aside
    by_stitch = {s.stitch: s.point.vertices[0] for s in su.thread.slides}
    # the knot as tied (a frame of the rod model reshapes the drawn knot; the cut reads the thread as it lies at
    # the frame's start, as test_suturing_knots sets knots)
    su.thread.x, su.thread.v = pts.copy(), np.zeros_like(pts)
    events = frame(su, model, state, solver, [InstrumentInput(SCISSORS, scissors(), hinge, q, 0.0)])
    [cut] = [e for e in events if e.kind == "thread_cut"]
    assert cut.instrument == SCISSORS and cut.detail["thread"] == 0 and cut.detail["piece"] == 1
    assert cut.detail["kept"] == "frozen" and cut.detail["stitches"] == [0] and cut.detail["tied"]
    assert cut.detail["knot"] == "square" and 5.0 < cut.detail["tail_mm"] < 12.0
    k = cut.detail["segment"]
    assert su.thread.x.shape[0] == k + 1 and not su.thread.slides  # the needle keeps its side, no stitch on it
    assert su.thread.spec.segments == k and su.thread.spec.length == pytest.approx(k * SEG)  # what is left of it
    [piece] = su.frozen
    assert piece.id == 1 and piece.x.shape[0] == n - k - 1 and len(piece.slides) == 2
    assert sorted(s.hold for s in piece.slides) == holds  # the same holds: the solver's grasps stay on the points
    assert {s.stitch: s.point.vertices[0] for s in piece.slides} == by_stitch
    assert [i for i, _ in su.threads()] == [0, 1]
    for _ in range(3):  # the piece is not simulated: it follows the tissue, which the holds keep
        events = frame(su, model, state, solver)
    assert sorted(s.hold for s in piece.slides) == holds  # kept while the piece lies still
    assert su.hold_ids() == [h for h, taut in zip(holds, piece.targets(state.x), strict=True) if taut is not None]
    assert np.isfinite(piece.x).all() and np.isfinite(su.thread.x).all()
    assert not [e for e in events if e.kind in ("tear", "thread_slipped")]


def test_a_frozen_piece_follows_its_stitch_points_and_holds_them_no_farther_apart_than_tied():
    _model, state = knot_world()
    top = state.x[:, 1].max()
    on_top = np.flatnonzero(state.x[:, 1] >= top - 1e-9)[:2]
    a, b = (int(i) for i in on_top)
    one = np.array([1.0, 0.0, 0.0])
    up = np.array([[0.0, 0.002, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.002, 0.0]])
    x = np.stack([state.x[a], state.x[a], state.x[b], state.x[b]]) + up
    slides = [Slide(TissuePoint(np.full(3, i, np.int32), one), u, 0, side, np.zeros(3))
              for i, u, side in ((a, 1.0, "entry"), (b, 2.0, "exit"))]  # fmt: skip
    piece = FrozenThread(3, x, slides, state, 0.00015)
    assert piece.targets(state.x) == [None, None]  # as tied: slack, not held
    shift = np.array([0.001, -0.0005, 0.002])
    state.x[[a, b]] += shift
    piece.follow(state.x)
    np.testing.assert_allclose(piece.x, x + shift, atol=1e-12)  # moved with its points
    gap = np.linalg.norm(state.x[b] - state.x[a])
    state.x[b] += (state.x[b] - state.x[a]) / gap * 0.5 * gap  # pulled apart: the loop is taut
    targets = piece.targets(state.x)
    assert all(t is not None for t in targets)
    assert np.linalg.norm(targets[1] - targets[0]) < np.linalg.norm(state.x[b] - state.x[a])  # pulled together


def _piece(x: np.ndarray, us, state) -> FrozenThread:
    """A frozen piece of polyline x holding vertex i at parameter us[i]."""
    one = np.array([1.0, 0.0, 0.0])
    slides = [Slide(TissuePoint(np.full(3, i, np.int32), one.copy()), u, 0, "entry", np.zeros(3))
              for i, u in enumerate(us)]  # fmt: skip
    return FrozenThread(2, x, slides, state, 0.00015)


def test_a_frozen_pieces_frame_follows_and_pulls_as_follow_and_targets_do():
    """FrozenThread.frame (the stitch points found once; np.interp's arithmetic planned once) gives the very bits
    of follow and targets, also for two points at one place along the piece (np.interp's own path)."""
    _model, state = knot_world()
    rng = np.random.default_rng(3)
    for us in ((1.0, 4.5), (2.0, 2.0), (0.5, 3.0, 6.0)):
        x = rng.normal(0.0, 0.005, (8, 3))
        a, b = _piece(x, us, state), _piece(x, us, state)
        for _ in range(4):
            state.x[: len(us)] += rng.normal(0.0, 0.002, (len(us), 3))
            a.follow(state.x)
            expected = a.targets(state.x)
            got = b.frame(state.x)
            assert np.array_equal(a.x, b.x)
            assert [None if t is None else t.tolist() for t in expected] == [
                None if t is None else t.tolist() for t in got
            ]


def test_a_cut_that_would_keep_too_many_threads_is_refused():
    model, state = knot_world()
    su, pts = stitched(model, state)
    su.frozen = [FrozenThread(i, pts[:3].copy(), [], state, 0.00015) for i in range(1, MAX_THREADS)]
    at = pts[2] + 0.5 * (pts[3] - pts[2])
    events = su.cut_with(SCISSORS, at - [0.0, 0.0, 0.008], ACROSS_X, 0.8, 0.0, 0.016, state)
    assert [(e.kind, e.detail["reason"]) for e in events] == [("thread_cut_refused", "too_many_threads")]
    assert len(su.thread.slides) == 2 and len(su.frozen) == MAX_THREADS - 1  # nothing changed
