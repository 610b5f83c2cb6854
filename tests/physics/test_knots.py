"""Knot detection on thread polylines built from knots of known type.

The knots are drawn by tests/physics/knot_shapes.py (4-plat closures of braids whose types are textbook, and a
parametric trefoil), tied along a thread as a connected sum of throws.
"""

import math

import numpy as np
import pytest

from physics.knots import (
    TIGHT_TENSION,
    KnotResult,
    classify_knot,
    factor_throws,
    jones_polynomial,
    reduce_code,
    summands,
)
from tests.physics.knot_shapes import (
    DOUBLE,
    FIGURE_EIGHT,
    GRANNY,
    SEG,
    SINGLE,
    SQUARE,
    SURGEONS,
    parametric_trefoil,
    plat,
    resample,
    rotation,
    thread,
    throw,
)

# --- the invariant itself -----------------------------------------------------------------------------------


def test_the_parametric_trefoil_is_one_throw_and_its_mirror_the_other_hand():
    right = classify_knot(parametric_trefoil())
    left = classify_knot(parametric_trefoil() * np.array([1.0, 1.0, -1.0]))
    assert right.throws == left.throws == 1 and right.kind is None  # a half knot holds nothing: kind None
    assert {right.handedness, left.handedness} == {(1,), (-1,)}
    assert right.crossings == 3
    positive = right if right.handedness == (1,) else left
    assert positive.jones == {1: 1, 3: 1, 4: -1}  # the right-handed trefoil: t + t^3 - t^4


def test_the_plat_closures_are_the_textbook_knots():
    assert classify_knot(resample(throw(SINGLE, 1), 0.05)).jones == {1: 1, 3: 1, 4: -1}
    double = classify_knot(resample(throw(DOUBLE, 1), 0.05))
    assert double.jones == {1: 1, 2: -1, 3: 2, 4: -1, 5: 1, 6: -1}  # 5_2
    assert (double.throws, double.wraps, double.handedness) == (1, (2,), (1,))
    eight = classify_knot(resample(plat(FIGURE_EIGHT), 0.05))
    assert eight.jones == {-2: 1, -1: -1, 0: 1, 1: -1, 2: 1}  # amphichiral: no throw explains it
    assert eight.kind is None and eight.throws == 0 and not eight.resolved and eight.knotted


def test_square_granny_and_surgeons_are_told_apart_loose():
    square = classify_knot(thread(SQUARE, 0.02))
    granny = classify_knot(thread(GRANNY, 0.02))
    surgeons = classify_knot(thread(SURGEONS, 0.02))
    assert (square.kind, square.throws, sorted(square.handedness)) == ("square", 2, [-1, 1])
    assert (granny.kind, granny.throws, granny.handedness) == ("granny", 2, (1, 1))
    assert (surgeons.kind, surgeons.throws, surgeons.wraps, surgeons.handedness) == ("surgeons", 2, (2, 1), (1, -1))
    assert square.crossings == granny.crossings == 6 and surgeons.crossings == 8
    assert not (square.tight or granny.tight or surgeons.tight)  # 2 cm knots on a 1 mm thread


def test_tight_knots_are_tight_only_under_tension():
    for modules, kind in ((SQUARE, "square"), (GRANNY, "granny"), (SURGEONS, "surgeons")):
        pts = thread(modules, 0.001, seg=0.0001, lead=0.01)  # a finely sampled thread, knots 1 mm per throw
        r = classify_knot(pts)
        assert r.kind == kind and r.tight, (kind, r)
        assert classify_knot(pts, tension=2 * TIGHT_TENSION).tight
        assert not classify_knot(pts, tension=0.5 * TIGHT_TENSION).tight
        assert np.linalg.norm(r.centre - pts.mean(axis=0)) < 0.05


def test_rotations_keep_the_knot_and_a_mirror_swaps_handedness_only():
    pts = thread(SURGEONS, 0.015)
    for seed in range(4):
        r = classify_knot(pts @ rotation(seed).T + np.array([0.1, -0.2, 0.3]))
        assert (r.kind, r.wraps, r.handedness) == ("surgeons", (2, 1), (1, -1))
    mirrored = classify_knot(pts * np.array([-1.0, 1.0, 1.0]))
    assert (mirrored.kind, mirrored.handedness) == ("surgeons", (-1, 1))
    granny = classify_knot(thread(GRANNY, 0.015) * np.array([1.0, 1.0, -1.0]) @ rotation(7).T)
    assert (granny.kind, granny.handedness) == ("granny", (-1, -1))
    square = classify_knot(thread(SQUARE, 0.015) * np.array([1.0, -1.0, 1.0]))
    assert square.kind == "square"


def test_noise_on_the_points_does_not_change_the_knot():
    rng = np.random.default_rng(3)
    pts = thread(SQUARE, 0.02)
    for _ in range(5):
        noisy = pts + rng.normal(scale=0.05 * SEG, size=pts.shape)
        assert classify_knot(noisy).kind == "square"


def test_a_straight_thread_and_loops_that_tie_nothing_are_no_knot():
    straight = resample(np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]), 0.003)
    assert classify_knot(straight) == KnotResult(None, 0, False, 0)
    # a coil: three turns of a helix, the thread going on along its axis (twists, an unknot)
    t = np.linspace(0.0, 6 * np.pi, 300)
    coil = np.stack([0.01 * np.cos(t), 0.01 * np.sin(t), 0.002 * t], axis=1)
    coil = np.vstack([[[0.01, 0.0, -0.05]], coil, [[0.01, 0.0, 0.09]]])
    r = classify_knot(resample(coil, SEG))
    assert (r.kind, r.throws, r.crossings, r.resolved) == (None, 0, 0, True) and not r.tight
    # a loop lying across the thread (a wrap that passes over and back, no tuck): Reidemeister II
    s = np.linspace(0.0, 1.0, 200)
    wrap = np.stack([0.05 * s, 0.01 * np.sin(2 * np.pi * s), 0.004 * np.sin(np.pi * s)], axis=1)
    wrap = np.vstack([wrap, [[0.03, -0.02, 0.0], [0.01, 0.02, -0.004], [-0.02, 0.0, 0.0]]])
    r = classify_knot(resample(wrap, SEG))
    assert r.throws == 0 and r.resolved and r.crossings == 0


def test_a_single_throw_is_a_half_knot():
    r = classify_knot(thread([throw(SINGLE, -1)], 0.01))
    assert (r.kind, r.throws, r.handedness, r.wraps) == (None, 1, (-1,), (1,))
    three = classify_knot(thread([*SQUARE, throw(SINGLE, 1)], 0.01))  # a square knot and a securing throw
    assert (three.kind, three.throws, sorted(three.handedness)) == ("square", 3, [-1, 1, 1])


def test_the_gauss_code_moves():
    # R I: a kink; R II: one strand over two; what is left of a trefoil stays
    assert reduce_code([(0, True), (0, False)]) == []
    assert reduce_code([(1, True), (2, True), (2, False), (1, False)]) == []
    trefoil = [(0, True), (1, False), (2, True), (0, False), (1, True), (2, False)]
    assert reduce_code(trefoil) == trefoil
    kinked = [*trefoil[:2], (9, False), (9, True), *trefoil[2:]]
    assert reduce_code(kinked) == trefoil
    # over-under then under-over: a bigon across the code's seam (every 2-crossing diagram is the unknot)
    assert reduce_code([(1, True), (2, False), (1, False), (2, True)]) == []
    a = [(0, True), (1, False), (2, True), (0, False), (1, True), (2, False)]
    b = [(3, False), (4, True), (5, False), (3, True), (4, False), (5, True)]
    assert sorted(map(len, summands(a + b))) == [6, 6]
    signs = {0: 1, 1: 1, 2: 1}
    assert jones_polynomial(a, signs) == {1: 1, 3: 1, 4: -1}
    throws, whole = factor_throws({1: 1, 3: 1, 4: -1, -1: 1, -3: 1, -4: -1})
    assert not whole and throws == []  # a sum of polynomials is no product of throws
    with pytest.raises(ValueError, match="exactly twice"):
        reduce_code([(0, True), (1, False)])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        classify_knot(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        classify_knot(np.full((5, 3), math.nan))
    with pytest.raises(ValueError, match="radius"):
        classify_knot(np.zeros((5, 3)), radius=0.0)
    assert classify_knot(np.zeros((7, 3))).throws == 0  # all at one point: no direction, no knot


def test_a_200_segment_thread_at_the_simulation_s_spacing():
    pts = thread(SQUARE, 0.03, seg=0.003, lead=0.15)
    assert 150 <= pts.shape[0] <= 260
    assert classify_knot(pts).kind == "square"


def test_a_knot_too_tangled_to_resolve_is_reported_unresolved_not_as_no_knot():
    # the (2, 17) torus knot: 17 crossings no move removes, one prime summand, beyond the state sum's budget
    r = classify_knot(resample(plat([(1, 1)] * 17), 0.05))
    assert (r.kind, r.throws, r.resolved, r.tight) == (None, 0, False, False)
    assert r.knotted and r.crossings == 17
    assert classify_knot(resample(plat([(1, 1)] * 5), 0.05)).jones == {2: 1, 4: 1, 5: -1, 6: 1, 7: -1}  # 5_1
