"""Priority accumulators: which objects a client's next snapshot carries under its byte budget.

Fiedler's scheme ("State Synchronization"): every object has an accumulator per client that grows each
frame by a weight and is reset to zero when the object is sent. The weight is the object's change that
the client has not seen (in quantization steps) times its *interest* for that client, which is larger
near the client's instruments and gaze point. Objects are offered to the packet in decreasing
accumulator order; whatever does not fit keeps accumulating, so a changed object is eventually sent
(its accumulator grows without bound while the ones that get sent drop back to zero).
"""

from __future__ import annotations

import numpy as np

DEFAULT_NEAR_RADIUS = 0.03
"""Metres: interest halves at this distance from the nearest focus point."""
DEFAULT_NEAR_GAIN = 4.0
"""Interest at a focus point is ``1 + gain``; far away it tends to 1."""


def interest(
    points: np.ndarray, focus: np.ndarray, radius: float = DEFAULT_NEAR_RADIUS, gain: float = DEFAULT_NEAR_GAIN
) -> np.ndarray:
    """Interest (M,) of points (M, 3) for a client whose instruments/gaze are at ``focus`` (F, 3).

    ``1 + gain / (1 + (d / radius)^2)`` with ``d`` the distance to the nearest focus point; 1 everywhere
    when there is no focus point.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(focus, dtype=np.float64).reshape(-1, 3)
    if len(f) == 0 or len(pts) == 0:
        return np.ones(len(pts))
    d2 = None
    for point in f:  # few focus points: a loop beats an (M, F, 3) temporary
        diff = pts - point
        this = np.einsum("ij,ij->i", diff, diff)
        d2 = this if d2 is None else np.minimum(d2, this)
    return 1.0 + gain / (1.0 + d2 / (radius * radius))


def accumulate(acc: np.ndarray, weights: np.ndarray) -> None:
    """``acc += weights`` where there is something to send; objects with weight 0 keep their value."""
    np.add(acc, weights, out=acc)


def candidates(acc: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Indices of eligible objects with a positive accumulator, highest first (ties: lower index first)."""
    idx = np.flatnonzero(eligible & (acc > 0))
    return idx[np.argsort(-acc[idx], kind="stable")]


class PriorityAccumulator:
    """Accumulators for ``n`` objects of one client (a thin shell over the functions above)."""

    def __init__(self, n: int) -> None:
        self.acc = np.zeros(n)

    def update(self, weights: np.ndarray, pending: np.ndarray) -> np.ndarray:
        """Add this frame's weights; objects with nothing pending drop to 0. Returns the send order."""
        accumulate(self.acc, weights)
        self.acc[~pending] = 0.0
        return candidates(self.acc, pending)

    def sent(self, idx: np.ndarray) -> None:
        self.acc[idx] = 0.0

    def reset(self, n: int | None = None) -> None:
        self.acc = np.zeros(len(self.acc) if n is None else n)
