"""The seam's knot events: checked every few frames, `knot_tied` once per knot when it becomes tight.

Tying a knot by simulated instruments is not done here: the thread's particles are set to knots of known type
(tests/physics/test_knots.py builds them) and the seam is stepped or asked to check."""

import numpy as np

from physics import Control, Solver
from physics.knots import TIGHT_TENSION
from physics.needle import NeedleSpec
from physics.suture_thread import ThreadSpec
from physics.suturing import KNOT_EVERY, REARM_CHECKS, Suturing
from tests.physics.knot_shapes import GRANNY, SINGLE, SQUARE, thread, throw
from tests.physics.suture_setup import knot_world

DT = 1 / 60
SEG = 0.0005  # m: a fine thread (the finest ThreadSpec allows), so that 1 mm knots are drawn well
ABOVE = np.array([0.0, 0.06, 0.0])  # the knots are tied well above the tissue


def knot_points(modules, size: float, stretch: float = 1.0) -> np.ndarray:
    """A knot's polyline above the tissue, every segment stretched by `stretch` (a strain of stretch - 1)."""
    pts = thread(modules, size, seg=SEG, lead=0.02)
    return pts[0] + (pts - pts[0]) * stretch + ABOVE


def suturing_for(model, pts: np.ndarray, segments: int | None = None) -> Suturing:
    spec = NeedleSpec()
    segments = segments or pts.shape[0] - 1
    position = pts[0] - np.array([spec.radius, 0.0, 0.0])  # the needle's tail (identity pose) on the thread's end
    su = Suturing(model, spec, ThreadSpec(segments=segments, segment_length=SEG), position, np.array([1.0, 0, 0, 0]))
    return su


def drive(su: Suturing, pts: np.ndarray) -> list:
    su.thread.x = pts.copy()
    return su.check_knot()


def test_a_knot_pulled_tight_is_reported_once_and_a_further_throw_again():
    model, _ = knot_world()
    loose = knot_points(SQUARE, 0.006, 1.01)
    tight = knot_points(SQUARE, 0.0012, 1.01)
    su = suturing_for(model, tight)
    assert drive(su, loose) == []  # a square knot, but loose
    assert su.knot.kind == "square" and not su.knot.tight
    events = drive(su, tight)
    assert [e.kind for e in events] == ["knot_tied"]
    detail = events[0].detail
    assert detail["kind"] == "square" and detail["throws"] == 2 and sorted(detail["handedness"]) == [-1, 1]
    assert detail["tight"] is True  # rehearsal.procedure.knot_matches reads it
    assert np.linalg.norm(np.array(detail["position"]) - tight.mean(axis=0)) < 0.01
    assert detail["tension"] >= TIGHT_TENSION
    assert drive(su, tight) == [] and drive(su, tight) == []  # still the same knot: no more events
    slack = knot_points(SQUARE, 0.0012, 1.0)  # tight in shape but nobody pulls: not tied
    assert drive(su, slack) == []
    third = knot_points([*SQUARE, throw(SINGLE, 1)], 0.0012, 1.01)  # a securing throw: a new knot
    events = drive(su, third)
    assert [(e.kind, e.detail["throws"]) for e in events] == [("knot_tied", 3)]


def test_the_same_knot_tied_again_after_it_was_loose_is_reported_again():
    model, _ = knot_world()
    tight = knot_points(GRANNY, 0.0012, 1.01)
    loose = knot_points(GRANNY, 0.006, 1.01)
    su = suturing_for(model, tight)
    assert [e.detail["kind"] for e in drive(su, tight)] == ["granny"]
    for _ in range(REARM_CHECKS - 1):
        assert drive(su, loose) == []
    assert drive(su, tight) == []  # loose too briefly: the same knot, not tied again
    for _ in range(REARM_CHECKS):
        drive(su, loose)
    assert [e.kind for e in drive(su, tight)] == ["knot_tied"]


def test_stepping_the_seam_checks_the_knot_every_few_frames():
    """The simulated thread does not hold these drawn knots tight (it springs them open), so here the thread is
    held still: every particle kinematic (no inverse mass), its shape the knot's, while the seam steps."""
    model, state = knot_world()
    solver = Solver(model)
    pts = knot_points(SQUARE, 0.0012, 1.01)
    su = suturing_for(model, pts)
    su.thread.x = pts.copy()
    su.thread.inv_mass[:] = 0.0
    frames_with_events = []
    for f in range(3 * KNOT_EVERY):
        su.before_step(state)
        report = solver.step(state, Control(su.inputs()), DT, 5)
        events = [e for e in su.after_step(model, state, report, DT) if e.kind == "knot_tied"]
        assert (su.knot is None) == (f + 1 < KNOT_EVERY)  # nothing checked before the first tenth frame
        if events:
            frames_with_events.append(f + 1)
            assert events[0].detail["kind"] == "square"
    assert frames_with_events == [KNOT_EVERY]  # tied at the first check; the same knot at the next ones: quiet
    assert np.allclose(su.thread.x, pts)
