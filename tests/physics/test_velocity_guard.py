"""physics.velocity_guard: a vertex's new velocity kept, reset when not finite, clamped to the speed limit."""

from __future__ import annotations

import numpy as np

from physics.velocity_guard import CLAMPED, KEPT, RESET, guard_velocity, guarded_velocity


def _vertex():
    x = np.array([[1.0, 2.0, 3.0]])
    x_prev = np.array([[0.5, 2.0, 3.0]])
    return x, x_prev, np.zeros((1, 3))


def test_a_velocity_under_the_limit_is_stored_as_it_is():
    x, x_prev, v = _vertex()
    assert guard_velocity(x, x_prev, v, 0, 0.5, 0.0, 0.0, 1.0, 2.0) == KEPT
    assert v[0].tolist() == [0.5, 0.0, 0.0] and x[0].tolist() == [1.0, 2.0, 3.0]


def test_a_non_finite_velocity_puts_the_vertex_back_at_rest():
    x, x_prev, v = _vertex()
    assert guard_velocity(x, x_prev, v, 0, np.nan, 0.0, 0.0, 1.0, 2.0) == RESET
    assert v[0].tolist() == [0.0, 0.0, 0.0] and x[0].tolist() == x_prev[0].tolist()


def test_a_velocity_over_the_limit_is_scaled_to_it_and_the_position_follows():
    x, x_prev, v = _vertex()
    assert guard_velocity(x, x_prev, v, 0, 3.0, 4.0, 0.0, 0.1, 1.0) == CLAMPED
    assert np.allclose(v[0], [0.6, 0.8, 0.0]) and np.allclose(x[0], x_prev[0] + 0.1 * v[0])


def test_the_guard_on_plain_floats_gives_what_the_array_guard_stores():
    for velocity in ((0.5, 0.0, 0.0), (np.nan, 0.0, 0.0), (3.0, 4.0, 0.0), (np.inf, 1.0, 2.0)):
        x, x_prev, v = _vertex()
        outcome = guard_velocity(x, x_prev, v, 0, *velocity, 0.1, 1.0)
        assert guarded_velocity(*velocity, 1.0) == (outcome, *v[0].tolist())
