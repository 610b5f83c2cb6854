"""The signed distance of a point to a closed triangle mesh in one compiled pass over its triangles.

A mesh fixture is asked for its distance in the haptic loop (1 kHz, ``netcode.thin_client.haptics``) and up to
``MAX_MARCH_STEPS`` times per instrument tip and tick on the server (``rehearsal.fixtures``); in numpy one call
cost about 200 us for a 208-triangle vessel region. This kernel finds the closest point (Ericson's regions,
Real-Time Collision Detection 5.1.5) and sums the generalized winding number (Van Oosterom & Strackee) in the
same loop, over flat arrays, without the GIL.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """The point of triangle abc nearest p (a degenerate triangle answers its first corner)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        return ax, ay, az
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:
        return bx, by, bz
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        t = d1 / (d1 - d3)
        return ax + t * abx, ay + t * aby, az + t * abz
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:
        return cx, cy, cz
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        t = d2 / (d2 - d6)
        return ax + t * acx, ay + t * acy, az + t * acz
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and d4 - d3 >= 0.0 and d5 - d6 >= 0.0:
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return bx + t * (cx - bx), by + t * (cy - by), bz + t * (cz - bz)
    s = va + vb + vc
    if s == 0.0 or not math.isfinite(s):
        return ax, ay, az
    v, w = vb / s, vc / s
    return ax + abx * v + acx * w, ay + aby * v + acy * w, az + abz * v + acz * w


@numba.njit(cache=True, nogil=True)
def mesh_signed_distance(
    vertices: np.ndarray, triangles: np.ndarray, centroid: np.ndarray, margin: float, p: np.ndarray
) -> tuple[float, np.ndarray]:
    """Signed distance (m, < 0 inside) from p to the mesh grown by ``margin``, and the outward normal there.
    Inside is decided by the winding number, so either winding order works. ``vertices`` (n, 3) float64,
    ``triangles`` (m, 3) int64, ``centroid`` and ``p`` (3,) float64."""
    px, py, pz = p[0], p[1], p[2]
    best = np.inf
    best_tri = 0
    qx = qy = qz = 0.0
    solid = 0.0
    for i in range(triangles.shape[0]):
        ia, ib, ic = triangles[i, 0], triangles[i, 1], triangles[i, 2]
        ax, ay, az = vertices[ia, 0], vertices[ia, 1], vertices[ia, 2]
        bx, by, bz = vertices[ib, 0], vertices[ib, 1], vertices[ib, 2]
        cx, cy, cz = vertices[ic, 0], vertices[ic, 1], vertices[ic, 2]
        ox, oy, oz = _closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz)
        dx, dy, dz = ox - px, oy - py, oz - pz
        d = dx * dx + dy * dy + dz * dz
        if d < best:
            best, best_tri, qx, qy, qz = d, i, ox, oy, oz
        # the solid angle of the triangle seen from p (Van Oosterom & Strackee)
        ux, uy, uz = ax - px, ay - py, az - pz
        vx, vy, vz = bx - px, by - py, bz - pz
        wx, wy, wz = cx - px, cy - py, cz - pz
        lu = math.sqrt(ux * ux + uy * uy + uz * uz)
        lv = math.sqrt(vx * vx + vy * vy + vz * vz)
        lw = math.sqrt(wx * wx + wy * wy + wz * wz)
        det = ux * (vy * wz - vz * wy) + uy * (vz * wx - vx * wz) + uz * (vx * wy - vy * wx)
        den = (
            lu * lv * lw
            + (ux * vx + uy * vy + uz * vz) * lw
            + (vx * wx + vy * wy + vz * wz) * lu
            + (wx * ux + wy * uy + wz * uz) * lv
        )
        solid += math.atan2(det, den)
    inside = abs(solid / (2.0 * math.pi)) > 0.5
    normal = np.zeros(3)
    dx, dy, dz = px - qx, py - qy, pz - qz
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    if r >= 1e-12:
        sign = -1.0 if inside else 1.0
        normal[0], normal[1], normal[2] = sign * dx / r, sign * dy / r, sign * dz / r
        return sign * r - margin, normal
    # on the surface: the nearest face's normal, turned away from the centroid
    ia, ib, ic = triangles[best_tri, 0], triangles[best_tri, 1], triangles[best_tri, 2]
    e1 = vertices[ib] - vertices[ia]
    e2 = vertices[ic] - vertices[ia]
    nx = e1[1] * e2[2] - e1[2] * e2[1]
    ny = e1[2] * e2[0] - e1[0] * e2[2]
    nz = e1[0] * e2[1] - e1[1] * e2[0]
    n = math.sqrt(nx * nx + ny * ny + nz * nz)
    if n <= 1e-12:
        nx, ny, nz, n = 0.0, 1.0, 0.0, 1.0
    if nx * (px - centroid[0]) + ny * (py - centroid[1]) + nz * (pz - centroid[2]) < 0.0:
        n = -n
    normal[0], normal[1], normal[2] = nx / n, ny / n, nz / n
    return -margin, normal
