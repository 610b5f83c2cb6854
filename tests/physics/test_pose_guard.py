"""Instrument pose sanitising: non-finite, teleporting, spinning or out-of-room input never reaches the solver."""

import math

import numpy as np
import pytest

from physics.pose_guard import PoseLimits, Verdict, guard_jaw, guard_pose

DT = 1.0 / 60.0
LIMITS = PoseLimits()
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])
PREV = (np.array([0.0, 0.1, 0.0]), IDENTITY.copy())


def quat_about_y(angle: float) -> np.ndarray:
    return np.array([math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0])


def test_a_reasonable_pose_passes_unchanged_and_normalised():
    p, q, verdict = guard_pose(PREV, [0.01, 0.1, 0.0], 3.0 * quat_about_y(0.1), DT, LIMITS)
    assert verdict is None
    np.testing.assert_array_equal(p, [0.01, 0.1, 0.0])
    np.testing.assert_allclose(q, quat_about_y(0.1))
    assert np.linalg.norm(q) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("position", "orientation"),
    [
        ([np.nan, 0.0, 0.0], IDENTITY),
        ([0.0, np.inf, 0.0], IDENTITY),
        ([0.0, 0.1, 0.0], [np.nan, 0.0, 0.0, 0.0]),
        ([0.0, 0.1, 0.0], [1.0, -np.inf, 0.0, 0.0]),
    ],
)
def test_nonfinite_input_is_rejected_and_the_previous_pose_kept(position, orientation):
    p, q, verdict = guard_pose(PREV, position, orientation, DT, LIMITS)
    assert verdict == Verdict.NONFINITE
    np.testing.assert_array_equal(p, PREV[0])
    np.testing.assert_array_equal(q, PREV[1])
    assert p is not PREV[0]  # a copy: later edits cannot alias the instrument's state
    # With nothing to fall back on, the caller gets None and must drop the instrument.
    assert guard_pose(None, position, orientation, DT, LIMITS)[:2] == (None, None)


def test_zero_quaternion_is_rejected():
    p, q, verdict = guard_pose(PREV, [0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0], DT, LIMITS)
    assert verdict == Verdict.BAD_ORIENTATION
    np.testing.assert_array_equal(q, IDENTITY)
    np.testing.assert_array_equal(p, PREV[0])
    assert guard_pose(PREV, [0.0, 0.1, 0.0], [1e-9, 0, 0, 0], DT, LIMITS)[2] == Verdict.BAD_ORIENTATION


def test_teleport_is_shortened_to_max_speed_times_dt_along_the_same_direction():
    target = np.array([1.0, 0.1, 0.5])
    p, _, verdict = guard_pose(PREV, target, IDENTITY, DT, LIMITS)
    assert verdict == Verdict.TOO_FAST
    step = p - PREV[0]
    assert np.linalg.norm(step) == pytest.approx(LIMITS.max_speed * DT)
    direction = (target - PREV[0]) / np.linalg.norm(target - PREV[0])
    np.testing.assert_allclose(step / np.linalg.norm(step), direction)
    # Just under the limit passes untouched.
    ok = PREV[0] + np.array([0.99 * LIMITS.max_speed * DT, 0, 0])
    p, _, verdict = guard_pose(PREV, ok, IDENTITY, DT, LIMITS)
    assert verdict is None and np.array_equal(p, ok)


def test_spinning_too_fast_is_slowed_to_max_angular_speed():
    p, q, verdict = guard_pose(PREV, PREV[0], quat_about_y(2.0), DT, LIMITS)
    assert verdict == Verdict.TOO_FAST
    np.testing.assert_array_equal(p, PREV[0])
    angle = 2.0 * math.acos(min(1.0, abs(float(q @ IDENTITY))))
    assert angle == pytest.approx(LIMITS.max_angular_speed * DT)
    np.testing.assert_allclose(q, quat_about_y(LIMITS.max_angular_speed * DT), atol=1e-12)
    # -q is the same rotation: no verdict for a sign flip.
    _, q, verdict = guard_pose(PREV, PREV[0], -IDENTITY, DT, LIMITS)
    assert verdict is None and np.allclose(q, IDENTITY)


def test_out_of_workspace_is_clamped_to_the_box():
    p, _, verdict = guard_pose(None, [5.0, -3.0, 0.0], IDENTITY, DT, LIMITS)
    assert verdict == Verdict.OUT_OF_WORKSPACE
    np.testing.assert_array_equal(p, [LIMITS.workspace_hi[0], LIMITS.workspace_lo[1], 0.0])
    # With a previous pose the clamped point is also speed limited (the first verdict is reported).
    p, _, verdict = guard_pose(PREV, [1e300, 0.1, 0.0], IDENTITY, DT, LIMITS)
    assert verdict == Verdict.OUT_OF_WORKSPACE
    assert np.all(np.isfinite(p)) and np.linalg.norm(p - PREV[0]) == pytest.approx(LIMITS.max_speed * DT)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError):
        guard_pose(PREV, [0.0, 0.1], IDENTITY, DT, LIMITS)
    with pytest.raises(ValueError):
        guard_pose(PREV, PREV[0], [1.0, 0.0, 0.0], DT, LIMITS)


@pytest.mark.parametrize(
    ("prev", "jaw", "expected", "verdict"),
    [
        (0.3, 0.5, 0.5, None),
        (0.3, math.nan, 0.3, Verdict.BAD_JAW),
        (None, math.nan, 0.0, Verdict.BAD_JAW),
        (0.3, math.inf, 0.3, Verdict.BAD_JAW),
        (0.3, -0.2, 0.0, Verdict.BAD_JAW),
        (0.3, 7.0, 1.0, Verdict.BAD_JAW),
        (0.3, 1.0, 1.0, None),
    ],
)
def test_guard_jaw(prev, jaw, expected, verdict):
    assert guard_jaw(prev, jaw, 1.0) == (expected, verdict)


def test_the_result_never_aliases_the_callers_array():
    src = np.array([0.0, 0.1, 0.0])
    p, _, verdict = guard_pose(PREV, src, IDENTITY, DT, LIMITS)
    assert verdict is None
    src += 1.0  # the caller reuses its buffer
    np.testing.assert_array_equal(p, [0.0, 0.1, 0.0])
