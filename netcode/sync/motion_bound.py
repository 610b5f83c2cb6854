"""An error bound per patch that follows its motion: coarse while the tissue moves, fine once it settles.

The goal's error terms are what a client *shows*: at most 1 mm (p99) while the tissue moves, at most the
bound (0.1 mm) at rest. With one fine bound for everything, every coordinate that moves more than 0.1 mm a
frame (11% of them on the recorded liver) costs bits every frame. ``MotionBound`` gives each patch, each
frame, the bound ``moving_error`` while it moves and ``max_error`` once it has settled: a patch *moves* when
any of its coordinates is more than ``max_error`` from where it was in any of the last ``window`` frames
(the benchmark's "at rest" test, per patch, over a shorter window: solver jitter below the bound does not
count, and a patch turns fine a few frames before the tissue counts as at rest). The encoder chooses deltas
within the patch's bound (wider intervals: longer runs of equal deltas, fewer bits) and counts a patch as
pending only when the client's version is off by more than it; a patch that settles is then refined by an
ordinary delta. The wire format and the decoders do not change (any grid value is a valid version).
"""

from __future__ import annotations

import numba
import numpy as np

DEFAULT_MOVING_ERROR = 5e-4
"""Metres: the bound a moving patch is sent at (0.5 mm per axis; what a client shows is this plus the
motion of the frames a patch waits, so the 1 mm p99 goal holds with room)."""
DEFAULT_WINDOW = 3
"""Frames of history: a patch moves while it is more than the fine bound from where it was in one of them."""


class MotionBound:
    """Per-patch error bounds from the motion of the coded positions (server-side state only)."""

    def __init__(
        self, max_error: float, moving_error: float | None = DEFAULT_MOVING_ERROR, window: int = DEFAULT_WINDOW
    ) -> None:
        if moving_error is not None and not moving_error >= max_error:
            raise ValueError(f"moving_error must be at least max_error ({max_error}), got {moving_error}")
        if not 1 <= window <= 64:
            raise ValueError(f"window must be 1..64 frames, got {window}")
        self.max_error = float(max_error)
        self.moving_error = None if moving_error is None else float(moving_error)
        self.window = int(window)
        self._ring: np.ndarray | None = None  # (window, N, 3) the last frames' coded positions (NaN: unknown)
        self._at = 0  # the ring slot the next frame goes to

    @property
    def coarsest(self) -> float:
        """The largest bound any patch may get (``max_error`` when the bound does not follow motion)."""
        return self.max_error if self.moving_error is None else self.moving_error

    def update(self, coded: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """This frame's bound per patch (P,) float64, from ``coded`` (N, 3) in layout order (``offsets``)."""
        n_p = len(offsets) - 1
        if self.moving_error is None:
            return np.full(n_p, self.max_error)
        ring, at = self.take_slot(coded.shape)
        bounds = np.empty(n_p)
        update_bounds(coded, ring, at, offsets, self.max_error, self.moving_error, bounds)
        return bounds

    def take_slot(self, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """(ring, slot) for a frame of coded positions of ``shape`` that the caller passes through
        ``update_bounds`` itself (in a kernel of its own: ``quantize.quantize_frame``); the ring is made for that
        shape if it has another, and the next frame gets the next slot."""
        if self._ring is None or self._ring.shape[1:] != shape:
            self._ring = np.full((self.window, *shape), np.nan)
            self._at = 0
        at = self._at
        self._at = (at + 1) % self.window
        return self._ring, at

    def reset(self) -> None:
        """Forget the motion (the next frames start from their positions: every patch fine at first)."""
        self._ring = None

    def remap(self, rows: np.ndarray, found: np.ndarray) -> None:
        """Keep the history of surviving vertices across a new layout: new row i was old row ``rows[i]``
        where ``found[i]``; new vertices start without one."""
        if self._ring is None:
            return
        ring = np.full((self.window, len(rows), 3), np.nan)
        ring[:, found] = self._ring[:, rows[found]]
        self._ring = ring


@numba.njit(cache=True, nogil=True)
def update_bounds(coded, ring, at, offsets, lo, hi, bounds) -> None:
    """Per patch: ``hi`` if a coordinate is more than ``lo`` from its value in a frame of the ring (NaN
    values: unknown, no motion), else ``lo``; then the frame goes into slot ``at`` of the ring."""
    window = ring.shape[0]
    for p in range(len(offsets) - 1):
        moving = False
        for i in range(offsets[p], offsets[p + 1]):
            for a in range(3):
                x = coded[i, a]
                if not moving:
                    for k in range(window):
                        if abs(x - ring[k, i, a]) > lo:  # False for NaN
                            moving = True
                            break
                ring[at, i, a] = x
        bounds[p] = hi if moving else lo
