"""Priority accumulators: which objects a client's next snapshot carries under its byte budget.

Fiedler's scheme ("State Synchronization"): every object has an accumulator per client that grows each
frame by a weight and is reset to zero when the object is sent. The weight is the object's change that
the client has not seen (in quantization steps) times its *interest* for that client, which is larger
near the client's instruments and gaze point. Objects are offered to the packet in decreasing
accumulator order; whatever does not fit keeps accumulating, so a changed object is eventually sent
(its accumulator grows without bound while the ones that get sent drop back to zero).
"""

from __future__ import annotations

import numba
import numpy as np

DEFAULT_NEAR_RADIUS = 0.03
"""Metres: interest halves at this distance from the nearest focus point."""
DEFAULT_NEAR_GAIN = 4.0
"""Interest at a focus point is ``1 + gain``; far away it tends to 1."""


@numba.njit(cache=True, nogil=True)
def interest_kernel(pts: np.ndarray, focus: np.ndarray, radius: float, gain: float, out: np.ndarray) -> None:
    """``out[i]`` = interest of ``pts[i]`` (see ``interest``); ``focus`` (F >= 1, 3)."""
    r2 = radius * radius
    for i in range(pts.shape[0]):
        best = np.inf
        for k in range(focus.shape[0]):
            dx = pts[i, 0] - focus[k, 0]
            dy = pts[i, 1] - focus[k, 1]
            dz = pts[i, 2] - focus[k, 2]
            best = min(best, dx * dx + dy * dy + dz * dz)
        out[i] = 1.0 + gain / (1.0 + best / r2)


def interest(
    points: np.ndarray, focus: np.ndarray, radius: float = DEFAULT_NEAR_RADIUS, gain: float = DEFAULT_NEAR_GAIN
) -> np.ndarray:
    """Interest (M,) of points (M, 3) for a client whose instruments/gaze are at ``focus`` (F, 3).

    ``1 + gain / (1 + (d / radius)^2)`` with ``d`` the distance to the nearest focus point; 1 everywhere
    when there is no focus point.
    """
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    f = np.ascontiguousarray(focus, dtype=np.float64).reshape(-1, 3)
    if len(f) == 0 or len(pts) == 0:
        return np.ones(len(pts))
    out = np.empty(len(pts))
    interest_kernel(pts, f, float(radius), float(gain), out)
    return out


@numba.njit(cache=True, nogil=True)
def update_order(acc: np.ndarray, weights: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """One frame of the accumulators in place: pending objects add their weight, the others drop to 0.
    Returns the pending objects with a positive accumulator, highest first (ties: lower index first).
    One compiled call per client and frame (the numpy version cost several calls' overhead)."""
    picked = np.empty(acc.shape[0], np.int64)
    count = 0
    for i in range(acc.shape[0]):
        if pending[i]:
            acc[i] += weights[i]
            if acc[i] > 0:
                picked[count] = i
                count += 1
        else:
            acc[i] = 0.0
    idx = picked[:count]
    return idx[np.argsort(-acc[idx], kind="mergesort")]


class PriorityAccumulator:
    """Accumulators for ``n`` objects of one client (a thin shell over the functions above). Sending an
    object sets its accumulator to 0 (the codec's ``record_sent`` does that for the patches it sent)."""

    def __init__(self, n: int) -> None:
        self.acc = np.zeros(n)

    def update(self, weights: np.ndarray, pending: np.ndarray) -> np.ndarray:
        """Add this frame's weights; objects with nothing pending drop to 0. Returns the send order."""
        return update_order(self.acc, weights, pending)

    def reset(self, n: int | None = None) -> None:
        self.acc = np.zeros(len(self.acc) if n is None else n)
