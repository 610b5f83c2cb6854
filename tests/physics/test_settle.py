"""physics.settle: a model stepped with no instruments until its tissue is at rest, remembered per model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physics import Control, Solver, build_model, new_state
from physics.materials import Material
from physics.procedural import tissue_block, vertices_in_box
from physics.scenes import SOFT_TISSUE
from physics.settle import RestTest, cache_key, forget, max_speed, settle, settled_state


def cantilever(young: float = SOFT_TISSUE.young):
    """A small block pinned at one end face: it sags under gravity and rings before it comes to rest."""
    mesh = tissue_block(size=(0.06, 0.02, 0.02), cells=(6, 2, 2))
    end = float(mesh.vertices[:, 0].min()) + 1e-9
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (end, np.inf, np.inf))
    material = Material("tissue", young=young, poisson=0.45, density=1000.0)
    return build_model(mesh, [material], fixed=fixed)


def test_settles_to_rest_by_the_stated_test_and_leaves_the_model_alone():
    model = cantilever()
    rest = model.rest_positions.copy()
    test = RestTest(speed=1e-3, hold_frames=3, max_frames=400, max_seconds=math.inf)
    done = settle(model, 1 / 60, 10, test=test)
    assert done.at_rest and done.reason == "rest" and 3 <= done.frames < 400
    assert done.max_speed < 1e-3
    assert np.abs(done.x - rest).max() > 1e-4  # it sagged
    np.testing.assert_array_equal(model.rest_positions, rest)
    # at rest: one more frame moves no vertex by more than speed x dt
    state = new_state(model)
    state.x[:], state.v[:] = done.x, done.v
    x0 = state.x.copy()
    Solver(model).step(state, Control([]), 1 / 60, 10)
    assert np.abs(state.x - x0).max() < 1e-3 / 60
    with pytest.raises(ValueError):
        done.x[0, 0] = 1.0  # the remembered arrays are read-only


def test_exact_frames_give_the_same_bits_as_the_rest_test_and_zero_is_the_rest_shape():
    model = cantilever()
    test = RestTest(speed=1e-3, hold_frames=3, max_frames=400, max_seconds=math.inf)
    done = settle(model, 1 / 60, 10, test=test)
    again = settle(model, 1 / 60, 10, frames=done.frames)
    assert again.reason == "frames" and again.frames == done.frames
    np.testing.assert_array_equal(again.x, done.x)
    np.testing.assert_array_equal(again.v, done.v)
    none = settle(model, frames=0)
    np.testing.assert_array_equal(none.x, model.rest_positions)
    assert none.frames == 0 and not none.v.any()


def test_frame_limit_is_reported_not_hidden():
    done = settle(cantilever(), 1 / 60, 10, test=RestTest(speed=1e-9, hold_frames=3, max_frames=4))
    assert done.frames == 4 and done.reason == "frames" and not done.at_rest


def test_remembered_per_model_and_settings_with_fresh_arrays_each_time():
    forget()
    model = cantilever()
    test = RestTest(speed=1e-3, hold_frames=3, max_frames=400, max_seconds=math.inf)
    s1, first = settled_state(model, 1 / 60, 10, test=test)
    s2, second = settled_state(cantilever(), 1 / 60, 10, test=test)  # an equal model built again
    assert second.seconds == 0.0 and second.frames == first.frames  # from memory
    np.testing.assert_array_equal(s1.x, s2.x)
    s1.x[:] += 1.0  # a room steps its own arrays
    s3, _ = settled_state(model, 1 / 60, 10, test=test)
    np.testing.assert_array_equal(s3.x, s2.x)
    assert s3.frame == 0 and s3.time == 0.0 and s3.damage.shape == (model.n_tets,)
    # exactly as many frames as the test took: the same start, from memory
    s4, exact = settled_state(model, 1 / 60, 10, frames=first.frames)
    assert exact.seconds == 0.0
    np.testing.assert_array_equal(s4.x, s2.x)
    # anything the step reads changes the key
    stiffer = cantilever(young=2 * SOFT_TISSUE.young)
    assert cache_key(stiffer, 1 / 60, 10, "xpbd") != cache_key(model, 1 / 60, 10, "xpbd")
    assert cache_key(model, 1 / 60, 20, "xpbd") != cache_key(model, 1 / 60, 10, "xpbd")
    assert cache_key(model, 1 / 30, 10, "xpbd") != cache_key(model, 1 / 60, 10, "xpbd")
    pulled = cantilever()
    pulled.gravity = np.array([0.0, -1.0, 0.0])
    assert cache_key(pulled, 1 / 60, 10, "xpbd") != cache_key(model, 1 / 60, 10, "xpbd")
    forget()


def test_bad_arguments_are_refused():
    model = cantilever()
    with pytest.raises(ValueError):
        settle(model, mode="verlet")
    with pytest.raises(ValueError):
        settle(model, frames=-1)
    for bad in ({"speed": 0.0}, {"hold_frames": 0}, {"max_frames": 0}, {"max_seconds": float("nan")}):
        with pytest.raises(ValueError):
            RestTest(**bad)
    assert RestTest(max_seconds=float("inf")).max_seconds == float("inf")  # no time limit
    assert max_speed(np.zeros((0, 3))) == 0.0
    assert max_speed(np.array([[np.nan, 0.0, 0.0]])) == float("inf")
