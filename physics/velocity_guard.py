"""The end-of-step guard on a vertex's new velocity, shared by the XPBD substep and the implicit frame.

A non-finite velocity puts the vertex back at its last good position, at rest; one faster than ``max_speed``
is scaled down to it and the position follows. Numba kernels call it per vertex (inlined, flat arrays only).
"""

from __future__ import annotations

import math

import numba as nb

KEPT, RESET, CLAMPED = 0, 1, 2  # what guard_velocity did


@nb.njit(inline="always", nogil=True, error_model="numpy", cache=True)
def guarded_velocity(vx, vy, vz, max_speed):
    """(outcome, vx, vy, vz): the velocity ``guard_velocity`` stores, on plain floats; the caller moves x as it
    does. For hot loops: an inlined call that takes arrays and writes them under a branch gets reference-count
    updates numba cannot prune (three atomic increments per vertex in the XPBD kernel's machine code, which made
    its vertex pass 4x slower: 0.8 against 0.2 ms a frame at 5k tets)."""
    speed2 = vx * vx + vy * vy + vz * vz
    if not (speed2 < 1e300):  # NaN or Inf anywhere: back to the last good position, at rest
        return RESET, 0.0, 0.0, 0.0
    if speed2 > max_speed * max_speed:
        f = max_speed / math.sqrt(speed2)
        return CLAMPED, vx * f, vy * f, vz * f
    return KEPT, vx, vy, vz


@nb.njit(inline="always", nogil=True, error_model="numpy", cache=True)
def guard_velocity(x, x_prev, v, i, vx, vy, vz, h, max_speed):
    """Store vertex i's velocity (vx, vy, vz) in v, reset or clamped as the module says; KEPT/RESET/CLAMPED."""
    outcome, vx, vy, vz = guarded_velocity(vx, vy, vz, max_speed)
    if outcome == RESET:
        x[i, 0] = x_prev[i, 0]
        x[i, 1] = x_prev[i, 1]
        x[i, 2] = x_prev[i, 2]
    elif outcome == CLAMPED:
        x[i, 0] = x_prev[i, 0] + vx * h
        x[i, 1] = x_prev[i, 1] + vy * h
        x[i, 2] = x_prev[i, 2] + vz * h
    v[i, 0] = vx
    v[i, 1] = vy
    v[i, 2] = vz
    return outcome
