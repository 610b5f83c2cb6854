"""Instrument kinematics inside the solver: poses interpolated across substeps, capsules to world space."""

from __future__ import annotations

import math

import numba as nb


@nb.njit(nogil=True, cache=True)
def interpolate_frames(p0, q0, j0, p1, q1, j1, s, out_p, out_R, out_jaw):
    """Pose of every instrument at fraction s of the frame (lerp + normalised lerp of quaternions)."""
    for k in range(p0.shape[0]):
        for d in range(3):
            out_p[k, d] = p0[k, d] + s * (p1[k, d] - p0[k, d])
        dot = q0[k, 0] * q1[k, 0] + q0[k, 1] * q1[k, 1] + q0[k, 2] * q1[k, 2] + q0[k, 3] * q1[k, 3]
        sign = 1.0 if dot >= 0.0 else -1.0
        w = q0[k, 0] + s * (sign * q1[k, 0] - q0[k, 0])
        x = q0[k, 1] + s * (sign * q1[k, 1] - q0[k, 1])
        y = q0[k, 2] + s * (sign * q1[k, 2] - q0[k, 2])
        z = q0[k, 3] + s * (sign * q1[k, 3] - q0[k, 3])
        inv = 1.0 / math.sqrt(w * w + x * x + y * y + z * z)
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
        out_R[k, 0] = 1 - 2 * (y * y + z * z)
        out_R[k, 1] = 2 * (x * y - w * z)
        out_R[k, 2] = 2 * (x * z + w * y)
        out_R[k, 3] = 2 * (x * y + w * z)
        out_R[k, 4] = 1 - 2 * (x * x + z * z)
        out_R[k, 5] = 2 * (y * z - w * x)
        out_R[k, 6] = 2 * (x * z - w * y)
        out_R[k, 7] = 2 * (y * z + w * x)
        out_R[k, 8] = 1 - 2 * (x * x + y * y)
        out_jaw[k] = j0[k] + s * (j1[k] - j0[k])


@nb.njit(inline="always", nogil=True, cache=True)
def to_world(P, R, k, lx, ly, lz, out, row):
    out[row, 0] = P[k, 0] + R[k, 0] * lx + R[k, 1] * ly + R[k, 2] * lz
    out[row, 1] = P[k, 1] + R[k, 3] * lx + R[k, 4] * ly + R[k, 5] * lz
    out[row, 2] = P[k, 2] + R[k, 6] * lx + R[k, 7] * ly + R[k, 8] * lz


@nb.njit(nogil=True, cache=True)
def world_capsules(cap_inst, cap_local, P, R, jaw, out_a, out_b):
    """World endpoints of every capsule; jaw capsules (sign != 0) turn by sign * jaw / 2 about local +y."""
    for j in range(cap_inst.size):
        k = cap_inst[j]
        ang = cap_local[j, 7] * jaw[k] * 0.5
        c = math.cos(ang)
        s = math.sin(ang)
        ax, ay, az = cap_local[j, 0], cap_local[j, 1], cap_local[j, 2]
        bx, by, bz = cap_local[j, 3], cap_local[j, 4], cap_local[j, 5]
        to_world(P, R, k, c * ax + s * az, ay, -s * ax + c * az, out_a, j)
        to_world(P, R, k, c * bx + s * bz, by, -s * bx + c * bz, out_b, j)


@nb.njit(nogil=True, cache=True)
def grasp_targets(g_inst, g_local, P, R, out):
    for g in range(g_inst.size):
        to_world(P, R, g_inst[g], g_local[g, 0], g_local[g, 1], g_local[g, 2], out, g)
