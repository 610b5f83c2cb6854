"""The suture thread closing a wound (physics/suture_thread.py): a stitch across the suturing scenario's incision
drawn shut by pulling both limbs, the thread sliding through the punctures with a friction limit, and the
needle's hold on the tissue it passes through limited by friction too (physics/needle.py's hold_on_arc)."""

import itertools
import math

import numpy as np
import pytest

import physics.suture_thread as suture_thread
from physics import Control, InstrumentInput, Solver, new_state
from physics.instruments import grasper, look_rotation
from physics.needle import NeedleSpec, TissuePoint, hold_on_arc
from physics.suture_thread import ThreadSpec, nearest_parameter
from physics.suturing import Suturing
from rehearsal.scenario import build_world, load_scenario
from tests.physics.suture_setup import pull_up_through_point

DT = 1 / 60
SEG = 0.003
# the suturing scenario (rehearsal/scenarios/suturing.toml): a 6 x 2 x 4 cm pad, a 1 cm deep slit along x = 0
# over z in [-1.5, 1.5] cm whose lips part 2 mm at rest in the middle
STITCH_Z = -0.005  # the scenario's first marks: 5 mm either side of the incision
WALL_EDGE = 0.95  # the bite comes out of the wall 0.25 mm under its edge (0.95 of the edge vertex, 0.05 of the
# one 5 mm under it); a deeper exit closes less: 0.5 mm under, the lips come to 0.5 of their rest gap, 1 mm
# under to 0.73


def scenario_wound():
    """The suturing scenario's world (its pad, slit, material, attachments and table) and its lips' top edges."""
    model = build_world(load_scenario("suturing"))
    pairs = model.wound_pairs
    top = np.abs(model.rest_positions[pairs[:, 0], 1] - model.rest_positions[:, 1].max()) < 1e-9
    return model, new_state(model), pairs[top]


def nearest_vertex(x, p):
    return int(np.argmin(np.linalg.norm(x - p, axis=1)))


def lip_gaps(x, lips):
    return np.linalg.norm(x[lips[:, 0]] - x[lips[:, 1]], axis=1)


def two_bite_stitch(model, state):
    """A thread laid as a stitch across the wound in two bites, the way the needle places it (out into the wound
    from the left mark, in from it to the right one): up from the left mark (the free limb), in at the left mark
    (top face, 5 mm from the wound), out of the left lip's wall just under its edge (WALL_EDGE),
    across the gap into the right wall, out at the right mark and up (to the needle); threaded
    through the four points."""
    x = state.x
    top = float(x[:, 1].max())
    one = np.array([1.0, 0.0, 0.0])

    def wall(side: float) -> TissuePoint:  # on the wall's face between the lip's edge and the vertex 5 mm down
        edge = nearest_vertex(x, [0.0004 * side, top, STITCH_Z])
        deep = nearest_vertex(x, [0.0004 * side, top - 0.005, STITCH_Z])
        return TissuePoint(np.array([edge, deep, edge], np.int32), np.array([WALL_EDGE, 1.0 - WALL_EDGE, 0.0]))

    marks = [
        TissuePoint(np.array([nearest_vertex(x, [-0.005, top, STITCH_Z])] * 3, np.int32), one),
        wall(-1.0),
        wall(1.0),
        TissuePoint(np.array([nearest_vertex(x, [0.005, top, STITCH_Z])] * 3, np.int32), one),
    ]
    where = [m.position(x) for m in marks]
    assert where[1][0] < 0.0 < where[2][0]  # one wall on either side of the gap
    pts = [where[0] + [0.0, SEG * i, 0.0] for i in range(12, 0, -1)]
    at = []
    for a, b in itertools.pairwise(where):
        at.append(len(pts))
        k = max(1, round(float(np.linalg.norm(b - a)) / SEG))
        pts += [a + (b - a) * i / k for i in range(k)]
    at.append(len(pts))
    pts += [where[3] + [0.0, SEG * i, 0.0] for i in range(13)]
    pts = np.array(pts[::-1])  # particle 0 on the needle's side
    n = pts.shape[0]
    su = Suturing(model, NeedleSpec(radius=0.008), ThreadSpec(segments=n - 1, segment_length=SEG),
                  np.array([0.0, 0.1, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))  # fmt: skip
    su.thread.x = pts
    for point, u, stitch, side in zip(marks, at, (0, 0, 1, 1), ("entry", "exit", "entry", "exit"), strict=True):
        su.thread.pass_through(point, n - 1.0 - u, stitch, side)
    return su


@pytest.mark.slow
def test_pulling_both_limbs_of_a_stitch_across_the_scenarios_wound_closes_its_lips_without_a_tear():
    """Both limbs pulled up and across each other (as for the first throw of a knot): the tension draws the entry
    and exit points toward each other, the walls together across the gap, and the lips at the stitch close; no lip
    elsewhere opens and the tissue does not tear. (Before: the stitch points slid together along the thread, the
    thread cut the stitch's corners and the lips came only to 1.23 of 1.73 mm.)"""
    model, state, lips = scenario_wound()
    solver = Solver(model)
    at = int(np.argmin(np.abs(state.x[lips[:, 0], 2] - STITCH_Z)))
    rest = lip_gaps(state.x, lips)
    su = two_bite_stitch(model, state)
    th = su.thread
    n = th.x.shape[0]
    free, needle_end = th.x[-1].copy(), th.x[0].copy()
    down = look_rotation((0.0, -1.0, 0.0))
    events = []
    for f in range(150):
        s = min(1.0, f / 120)
        hands = [
            InstrumentInput(1, grasper(), free + s * np.array([0.012, 0.01, 0.0]), down, 0.0),
            InstrumentInput(2, grasper(), needle_end + s * np.array([-0.012, 0.01, 0.0]), down, 0.0),
        ]
        su.before_step(state)
        report = solver.step(state, Control(hands + su.inputs()), DT, 10)
        if f == 0:
            th.grab(1, n - 1, state)
            th.grab(2, 0, state)
        events += su.after_step(model, state, report, DT)
    gaps = lip_gaps(state.x, lips)
    assert gaps[at] < 0.3 * rest[at], f"the lips at the stitch: {rest[at] * 1e3:.2f} -> {gaps[at] * 1e3:.2f} mm"
    assert gaps.max() < rest.max() + 0.0002, f"a lip opened to {gaps.max() * 1e3:.2f} mm"
    assert su.tears == 0 and not [e for e in events if e.kind in ("tear", "thread_slipped")]
    assert len(th.slides) == 4 and all(np.linalg.norm(s.force) > 0.01 for s in th.slides)  # all four pull
    us = [s.u for s in th.slides]
    assert us == sorted(us, reverse=True) and min(-np.diff(us)) > 0.0  # in order, never on one place
    assert np.isfinite(th.x).all() and np.isfinite(state.x).all()


def _eyelet_pull(friction: bool, monkeypatch) -> tuple[float, float]:
    """A thread through one point of the top face (along the face, then straight up), its upper end pulled 2 cm up
    (the slack drawn through the point): how far the tissue point was dragged along (m), and how far the thread
    slid through it (segments)."""
    if not friction:
        monkeypatch.setattr(suture_thread, "THREAD_FRICTION_N", 0.0)
        monkeypatch.setattr(suture_thread, "THREAD_MU", 0.0)
    model, state, _lips = scenario_wound()
    top = float(state.x[:, 1].max())
    e = nearest_vertex(state.x, [-0.015, top, 0.01])
    th = pull_up_through_point(model, state, e)
    [slide] = th.slides
    assert slide.held is not None and abs(slide.held - slide.u) < 1.0  # the held material stays near the hole
    return float(np.linalg.norm(state.x[e] - model.rest_positions[e])), 20.0 - slide.u


@pytest.mark.slow
def test_the_thread_slides_through_a_puncture_past_its_friction_limit_and_drags_the_tissue_up_to_it(monkeypatch):
    dragged, slid = _eyelet_pull(True, monkeypatch)
    free_drag, free_slid = _eyelet_pull(False, monkeypatch)
    assert slid > 0.6 * 0.02 / SEG and free_slid > 0.6 * 0.02 / SEG  # past the limit it slides either way
    assert dragged > free_drag  # friction drags the tissue along with the thread...
    assert dragged < 0.002  # ...up to its limit only (a few tenths of a newton over the tissue's 300 N/m)


def test_nearest_parameter_finds_the_place_on_the_thread_within_its_bounds():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    assert nearest_parameter(x, np.array([1.25, 0.3, 0.0]), 0.0, 3.0) == pytest.approx(1.25)
    assert nearest_parameter(x, np.array([2.2, 0.5, 0.0]), 0.0, 3.0) == pytest.approx(2.5)
    assert nearest_parameter(x, np.array([2.2, 0.5, 0.0]), 0.0, 1.5) == pytest.approx(1.5)  # held within bounds


def _turn_a_bound_point(turn: float, slip: float) -> float:
    """One tissue point at rest on a needle's arc (at 1 rad) turned by `turn`: the angle it is left at."""
    radius = 0.01
    p = np.zeros(3)
    R = np.eye(3).reshape(9).copy()
    x = np.array([[radius * math.cos(1.0), radius * math.sin(1.0), 0.0]])
    rest = x.copy()
    verts = np.zeros((1, 3), np.int32)
    weights = np.array([[1.0, 0.0, 0.0]])
    out, angle = np.zeros(3), np.zeros(1)
    hold_on_arc(x, np.ones(1), np.ones(1), verts, weights, 1, p, R, radius, turn, 1.0, 3600.0, out, angle, rest, slip)
    return math.atan2(x[0, 1], x[0, 0])


def test_the_needle_drags_a_bound_point_along_by_friction_until_it_slips():
    assert _turn_a_bound_point(0.01, 0.0005) == pytest.approx(1.01)  # within the limit: it sticks to the wire
    assert _turn_a_bound_point(0.2, 0.0005) == pytest.approx(1.05)  # past it: dragged 0.5 mm of arc, no farther
    assert _turn_a_bound_point(-0.2, 0.0005) == pytest.approx(0.95)
    assert _turn_a_bound_point(0.2, 0.0) == pytest.approx(1.0)  # no friction: the wire slides through it
