"""The end-of-step guard on a vertex's new velocity, shared by the XPBD substep and the implicit frame.

A non-finite velocity puts the vertex back at its last good position, at rest; one faster than ``max_speed``
is scaled down to it and the position follows. Numba kernels call it per vertex (inlined, flat arrays only).
"""

from __future__ import annotations

import math

import numba as nb

KEPT, RESET, CLAMPED = 0, 1, 2  # what guard_velocity did


@nb.njit(inline="always", nogil=True, error_model="numpy", cache=True)
def guard_velocity(x, x_prev, v, i, vx, vy, vz, h, max_speed):
    """Store vertex i's velocity (vx, vy, vz) in v, reset or clamped as the module says; KEPT/RESET/CLAMPED."""
    speed2 = vx * vx + vy * vy + vz * vz
    outcome = KEPT
    if not (speed2 < 1e300):  # NaN or Inf anywhere: back to the last good position, at rest
        x[i, 0] = x_prev[i, 0]
        x[i, 1] = x_prev[i, 1]
        x[i, 2] = x_prev[i, 2]
        vx = 0.0
        vy = 0.0
        vz = 0.0
        outcome = RESET
    elif speed2 > max_speed * max_speed:
        f = max_speed / math.sqrt(speed2)
        vx *= f
        vy *= f
        vz *= f
        x[i, 0] = x_prev[i, 0] + vx * h
        x[i, 1] = x_prev[i, 1] + vy * h
        x[i, 2] = x_prev[i, 2] + vz * h
        outcome = CLAMPED
    v[i, 0] = vx
    v[i, 1] = vy
    v[i, 2] = vz
    return outcome
