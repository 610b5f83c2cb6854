"""Instrument pose sanitising: nothing non-finite, teleporting or out of the room reaches the solver."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from physics.smallvec import dot, norm


@dataclass(frozen=True)
class PoseLimits:
    """Largest believable instrument motion and the box instruments may occupy (metres, seconds)."""

    max_speed: float = 2.0  # m/s; hands in surgery stay well under 1 m/s
    max_angular_speed: float = 25.0  # rad/s
    workspace_lo: tuple[float, float, float] = (-2.0, -1.0, -2.0)
    workspace_hi: tuple[float, float, float] = (2.0, 3.0, 2.0)


class Verdict:
    """Why a pose was changed before use (None = accepted as sent)."""

    NONFINITE = "nonfinite"
    BAD_ORIENTATION = "bad_orientation"
    OUT_OF_WORKSPACE = "out_of_workspace"
    TOO_FAST = "too_fast"
    BAD_JAW = "bad_jaw"


def guard_pose(
    prev: tuple[np.ndarray, np.ndarray] | None,
    position: np.ndarray,
    orientation: np.ndarray,
    dt: float,
    limits: PoseLimits,
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Return a safe (position, unit quaternion, verdict) for a requested pose.

    Non-finite or zero-length input is rejected (the previous pose is kept; with no previous pose, the
    caller must drop the instrument). Out-of-workspace positions are clamped to the box; a jump faster
    than the limits is shortened to the largest allowed step along the same direction.
    """
    # Copies: the result becomes the instrument's state, which a caller editing its input array in
    # place must not be able to move behind the guard's back. The checks run in one numba call (this runs per
    # instrument and frame; the same checks as numpy calls on 3- and 4-vectors cost ~20 us).
    p = np.array(position, dtype=np.float64).reshape(3)
    q = np.array(orientation, dtype=np.float64).reshape(4)
    if prev is None:
        p0, q0, has_prev = _NO_P, _NO_Q, False
    else:
        p0, q0, has_prev = _vector(prev[0], 3), _vector(prev[1], 4), True
    code = _guard(p, q, p0, q0, has_prev, float(dt), *_limit_args(limits))
    if code in (_NONFINITE, _BAD_ORIENTATION):
        return (*_keep(prev), _VERDICTS[code])
    return p, q, _VERDICTS[code]


def guard_jaw(prev: float | None, jaw: float, max_jaw: float) -> tuple[float, str | None]:
    """Clamp a jaw opening (radians) to [0, max_jaw]; a non-finite value keeps the previous opening."""
    if not math.isfinite(jaw):
        return (prev if prev is not None else 0.0), Verdict.BAD_JAW
    clamped = min(max(jaw, 0.0), max_jaw)
    return clamped, (Verdict.BAD_JAW if clamped != jaw else None)


def _keep(prev: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    return (None, None) if prev is None else (prev[0].copy(), prev[1].copy())


_NO_P = np.zeros(3)
_NO_Q = np.array([1.0, 0.0, 0.0, 0.0])
_OK, _NONFINITE, _BAD_ORIENTATION, _OUT_OF_WORKSPACE, _TOO_FAST = range(5)
_VERDICTS = (None, Verdict.NONFINITE, Verdict.BAD_ORIENTATION, Verdict.OUT_OF_WORKSPACE, Verdict.TOO_FAST)


def _vector(a, n: int) -> np.ndarray:
    """a as a 1-D n-vector for _guard (without a copy when it already is one)."""
    if type(a) is np.ndarray and a.ndim == 1 and a.shape[0] == n:
        return a
    return np.ascontiguousarray(a, dtype=np.float64).reshape(n)


_LIMIT_ARGS: dict[int, tuple] = {}


def _limit_args(limits: PoseLimits) -> tuple[float, ...]:
    """_guard's limit arguments (speeds, then workspace lo and hi), made once per PoseLimits object."""
    entry = _LIMIT_ARGS.get(id(limits))
    if entry is None or entry[0] is not limits:
        lo, hi = limits.workspace_lo, limits.workspace_hi
        args = (float(limits.max_speed), float(limits.max_angular_speed), *map(float, lo[:3]), *map(float, hi[:3]))
        if len(_LIMIT_ARGS) >= 64:
            _LIMIT_ARGS.clear()
        entry = _LIMIT_ARGS[id(limits)] = (limits, args)
    return entry[1]


@nb.njit(nogil=True, cache=True)
def _guard(p, q, p0, q0, has_prev, dt, max_speed, max_angular_speed, lo0, lo1, lo2, hi0, hi1, hi2):
    """guard_pose on p (3,) and q (4,) in place; returns the verdict's index in _VERDICTS.

    The same operations in the same order as numpy did them (norms and dots via physics.smallvec), so the
    sanitised pose is bit for bit what the numpy version returned.
    """
    for i in range(3):
        if not math.isfinite(p[i]):
            return _NONFINITE
    for i in range(4):
        if not math.isfinite(q[i]):
            return _NONFINITE
    n = norm(q)
    if n < 1e-6:
        return _BAD_ORIENTATION
    for i in range(4):
        q[i] = q[i] / n
    verdict = _OK
    lo = (lo0, lo1, lo2)
    hi = (hi0, hi1, hi2)
    outside = False
    for i in range(3):
        if p[i] < lo[i] or p[i] > hi[i]:
            outside = True
    if outside:
        for i in range(3):
            p[i] = min(max(p[i], lo[i]), hi[i])
        verdict = _OUT_OF_WORKSPACE
    if not has_prev:
        return verdict
    step = np.empty(3)
    for i in range(3):
        step[i] = p[i] - p0[i]
    dist = norm(step)
    max_dist = max_speed * dt
    if dist > max_dist:
        f = max_dist / dist
        for i in range(3):
            p[i] = p0[i] + step[i] * f
        if verdict == _OK:
            verdict = _TOO_FAST
    if dot(q, q0) < 0.0:
        for i in range(4):
            q[i] = -q[i]  # same rotation, shorter way round
    angle = 2.0 * math.acos(min(1.0, abs(dot(q, q0))))
    max_angle = max_angular_speed * dt
    if angle > max_angle:
        _slerp(q0, q, max_angle / angle)
        if verdict == _OK:
            verdict = _TOO_FAST
    return verdict


@nb.njit(inline="always", nogil=True, cache=True)
def _slerp(q0, q1, t):
    """q1 <- the rotation a fraction t of the way from q0 to q1 (spherical interpolation, renormalised)."""
    cos = min(1.0, dot(q0, q1))
    theta = math.acos(cos)
    if theta < 1e-9:
        return
    s = math.sin(theta)
    a = math.sin((1 - t) * theta) / s
    b = math.sin(t * theta) / s
    for i in range(4):
        q1[i] = a * q0[i] + b * q1[i]
    n = norm(q1)
    for i in range(4):
        q1[i] = q1[i] / n
