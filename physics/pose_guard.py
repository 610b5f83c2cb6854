"""Instrument pose sanitising: nothing non-finite, teleporting or out of the room reaches the solver."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    # place must not be able to move behind the guard's back.
    p = np.array(position, dtype=np.float64).reshape(3)
    q = np.array(orientation, dtype=np.float64).reshape(4)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        return (*_keep(prev), Verdict.NONFINITE)
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:
        return (*_keep(prev), Verdict.BAD_ORIENTATION)
    q = q / norm
    verdict = None
    lo, hi = np.asarray(limits.workspace_lo), np.asarray(limits.workspace_hi)
    if np.any(p < lo) or np.any(p > hi):
        p = np.clip(p, lo, hi)
        verdict = Verdict.OUT_OF_WORKSPACE
    if prev is None:
        return p, q, verdict
    p0, q0 = prev
    step = p - p0
    dist = float(np.linalg.norm(step))
    max_dist = limits.max_speed * dt
    if dist > max_dist:
        p = p0 + step * (max_dist / dist)
        verdict = verdict or Verdict.TOO_FAST
    if float(np.dot(q, q0)) < 0.0:
        q = -q  # same rotation, shorter way round
    angle = 2.0 * math.acos(min(1.0, abs(float(np.dot(q, q0)))))
    max_angle = limits.max_angular_speed * dt
    if angle > max_angle:
        q = _slerp(q0, q, max_angle / angle)
        verdict = verdict or Verdict.TOO_FAST
    return p, q, verdict


def guard_jaw(prev: float | None, jaw: float, max_jaw: float) -> tuple[float, str | None]:
    """Clamp a jaw opening (radians) to [0, max_jaw]; a non-finite value keeps the previous opening."""
    if not math.isfinite(jaw):
        return (prev if prev is not None else 0.0), Verdict.BAD_JAW
    clamped = min(max(jaw, 0.0), max_jaw)
    return clamped, (Verdict.BAD_JAW if clamped != jaw else None)


def _keep(prev: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    return (None, None) if prev is None else (prev[0].copy(), prev[1].copy())


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    cos = min(1.0, float(np.dot(q0, q1)))
    theta = math.acos(cos)
    if theta < 1e-9:
        return q1
    s = math.sin(theta)
    q = (math.sin((1 - t) * theta) / s) * q0 + (math.sin(t * theta) / s) * q1
    return q / np.linalg.norm(q)
