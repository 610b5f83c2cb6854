"""Contact kernels: tissue vertices against kinematic instrument capsules and the fixed environment.

Each contact projects the vertex out of the shape and applies Coulomb friction to the tangential motion
relative to the shape over the substep (position-based friction, Macklin et al. 2014).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from physics.kinematics import interpolate_frames, world_capsules


@nb.njit(inline="always", nogil=True, cache=True)
def friction(px, py, pz, ox, oy, oz, nx, ny, nz, depth, mu, sx, sy, sz):
    """Point p (previously at o) with its tangential slip removed (static) or shortened (kinetic); s = the surface's
    own motion. On plain floats, like everything a vertex loop inlines (see physics.velocity_guard.guarded_velocity:
    numba's reference counts)."""
    dx = px - ox - sx
    dy = py - oy - sy
    dz = pz - oz - sz
    dn = dx * nx + dy * ny + dz * nz
    tx = dx - dn * nx
    ty = dy - dn * ny
    tz = dz - dn * nz
    slip = math.sqrt(tx * tx + ty * ty + tz * tz)
    if slip <= 0.0:
        return px, py, pz
    limit = mu * depth
    scale = 1.0 if slip <= limit else limit / slip
    return px - tx * scale, py - ty * scale, pz - tz * scale


@nb.njit(inline="always", nogil=True, cache=True)
def environment_point(px, py, pz, ox, oy, oz, planes, spheres, boxes, mu):
    """(contacts, px, py, pz): point p (previously at o) kept outside every environment shape, on plain floats: the
    XPBD vertex pass inlines this and writes vertex i once (with the array writes in here it took about 3 us a
    substep more at 5k tets; see physics.velocity_guard.guarded_velocity on numba's reference counts)."""
    hits = 0
    for k in range(planes.shape[0]):
        nx, ny, nz = planes[k, 0], planes[k, 1], planes[k, 2]
        d = px * nx + py * ny + pz * nz - planes[k, 3]
        if d < 0.0:
            px -= nx * d
            py -= ny * d
            pz -= nz * d
            px, py, pz = friction(px, py, pz, ox, oy, oz, nx, ny, nz, -d, mu, 0.0, 0.0, 0.0)
            hits += 1
    for k in range(spheres.shape[0]):
        rx = px - spheres[k, 0]
        ry = py - spheres[k, 1]
        rz = pz - spheres[k, 2]
        dist = math.sqrt(rx * rx + ry * ry + rz * rz)
        r = spheres[k, 3]
        if dist < r and dist > 1e-12:
            nx, ny, nz = rx / dist, ry / dist, rz / dist
            depth = r - dist
            px += nx * depth
            py += ny * depth
            pz += nz * depth
            px, py, pz = friction(px, py, pz, ox, oy, oz, nx, ny, nz, depth, mu, 0.0, 0.0, 0.0)
            hits += 1
    for k in range(boxes.shape[0]):
        best = 1e30
        axis = -1
        sign = 1.0
        p = (px, py, pz)
        for a in range(3):
            local = p[a] - boxes[k, a]
            pen = boxes[k, 3 + a] - abs(local)
            if pen <= 0.0:
                axis = -2
                break
            if pen < best:
                best = pen
                axis = a
                sign = 1.0 if local >= 0.0 else -1.0
        if axis >= 0:
            if axis == 0:
                px += sign * best
            elif axis == 1:
                py += sign * best
            else:
                pz += sign * best
            n0 = sign if axis == 0 else 0.0
            n1 = sign if axis == 1 else 0.0
            n2 = sign if axis == 2 else 0.0
            px, py, pz = friction(px, py, pz, ox, oy, oz, n0, n1, n2, best, mu, 0.0, 0.0, 0.0)
            hits += 1
    return hits, px, py, pz


@nb.njit(inline="always", nogil=True, cache=True)
def environment_contact(x, x_prev, i, planes, spheres, boxes, mu):
    """Keep vertex i outside every environment shape (``environment_point`` on its row); the number of contacts."""
    hits, px, py, pz = environment_point(
        x[i, 0], x[i, 1], x[i, 2], x_prev[i, 0], x_prev[i, 1], x_prev[i, 2], planes, spheres, boxes, mu
    )
    x[i, 0] = px
    x[i, 1] = py
    x[i, 2] = pz
    return hits


@nb.njit(nogil=True, cache=True)
def instrument_contacts(
    x, x_prev, inv_mass, mass, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active, wa, wb, pa, pb,
    inst_mu, force_scale, out_force,
):  # fmt: skip
    """Push candidate tissue points out of their instrument's active capsules (wa-wb now, pa-pb last substep).

    A point is a barycentric combination of three vertices (a vertex itself is (v, v, v) with weights
    (1, 0, 0)); sampling surface triangles too keeps a thin shaft from slipping between the vertices of a
    coarse mesh. The point's correction (normal push plus Coulomb friction against the capsule's own
    motion) is shared by its vertices in proportion to weight x inverse mass. out_force[k] accumulates
    the force (N) instrument k exerts on the tissue, averaged over the frame. Returns the contact count.
    """
    hits = 0
    for c in range(cand_inst.size):
        k = cand_inst[c]
        denom = 0.0
        for q in range(3):
            denom += cand_weights[c, q] * cand_weights[c, q] * inv_mass[cand_verts[c, q]]
        if denom <= 0.0:
            continue
        for j in range(cap_inst.size):
            if cap_inst[j] != k or not cap_active[j]:
                continue
            px = py = pz = 0.0
            ox = oy = oz = 0.0
            for q in range(3):
                v, b = cand_verts[c, q], cand_weights[c, q]
                px += b * x[v, 0]
                py += b * x[v, 1]
                pz += b * x[v, 2]
                ox += b * x_prev[v, 0]
                oy += b * x_prev[v, 1]
                oz += b * x_prev[v, 2]
            t, rx, ry, rz = segment_offset(px, py, pz, wa, wb, j)
            dist = math.sqrt(rx * rx + ry * ry + rz * rz)
            depth = cap_r[j] - dist
            if depth <= 0.0 or dist < 1e-12:
                continue
            nx, ny, nz = rx / dist, ry / dist, rz / dist
            # Slip of the pushed-out point relative to the capsule's surface over the substep.
            ax, ay, az = wa[j, 0], wa[j, 1], wa[j, 2]
            ex, ey, ez = wb[j, 0] - ax, wb[j, 1] - ay, wb[j, 2] - az
            sx = (px + nx * depth - ox) - ((ax + t * ex) - (pa[j, 0] + t * (pb[j, 0] - pa[j, 0])))
            sy = (py + ny * depth - oy) - ((ay + t * ey) - (pa[j, 1] + t * (pb[j, 1] - pa[j, 1])))
            sz = (pz + nz * depth - oz) - ((az + t * ez) - (pa[j, 2] + t * (pb[j, 2] - pa[j, 2])))
            sn = sx * nx + sy * ny + sz * nz
            tx, ty, tz = sx - sn * nx, sy - sn * ny, sz - sn * nz
            slip = math.sqrt(tx * tx + ty * ty + tz * tz)
            limit = inst_mu[k] * depth
            f = 0.0 if slip <= 0.0 else (1.0 if slip <= limit else limit / slip)
            dx = nx * depth - tx * f
            dy = ny * depth - ty * f
            dz = nz * depth - tz * f
            for q in range(3):
                v, b = cand_verts[c, q], cand_weights[c, q]
                share = inv_mass[v] * b / denom
                x[v, 0] += share * dx
                x[v, 1] += share * dy
                x[v, 2] += share * dz
                m = mass[v] * share * force_scale
                out_force[k, 0] += m * dx
                out_force[k, 1] += m * dy
                out_force[k, 2] += m * dz
            hits += 1
    return hits


@nb.njit(nogil=True, cache=True)
def attach_pass(x, inv_mass, verts, weights, targets, alpha_tilde, force_scale, out_force):
    """XPBD point constraints: the barycentric point of (verts, weights) pulled to targets.

    out_force[g] accumulates the force (N) on the tissue at point g, averaged over the frame.
    """
    for g in range(verts.shape[0]):
        denom = alpha_tilde
        for c in range(3):
            denom += weights[g, c] * weights[g, c] * inv_mass[verts[g, c]]
        if denom <= alpha_tilde:
            continue
        for d in range(3):
            p = 0.0
            for c in range(3):
                p += weights[g, c] * x[verts[g, c], d]
            dl = -(p - targets[g, d]) / denom
            for c in range(3):
                v = verts[g, c]
                x[v, d] += inv_mass[v] * weights[g, c] * dl
            out_force[g, d] += dl * force_scale


@nb.njit(inline="always", nogil=True, cache=True)
def segment_offset(px, py, pz, a, b, j):
    """Point p's closest point on segment j (a[j] to b[j]): its parameter t in [0, 1] and p's offset from it."""
    ex, ey, ez = b[j, 0] - a[j, 0], b[j, 1] - a[j, 1], b[j, 2] - a[j, 2]
    rx, ry, rz = px - a[j, 0], py - a[j, 1], pz - a[j, 2]
    ee = ex * ex + ey * ey + ez * ez
    t = 0.0 if ee <= 0.0 else min(1.0, max(0.0, (rx * ex + ry * ey + rz * ez) / ee))
    return t, rx - t * ex, ry - t * ey, rz - t * ez


@nb.njit(inline="always", nogil=True, cache=True)
def _near_segment(px, py, pz, a, b, j, reach):
    _, rx, ry, rz = segment_offset(px, py, pz, a, b, j)
    return rx * rx + ry * ry + rz * rz <= reach * reach


@nb.njit(inline="always", nogil=True, cache=True)
def _outside(px, py, pz, box, row):
    """The point lies outside the axis-aligned box box[row] = (lo x, y, z, hi x, y, z)."""
    return (
        px < box[row, 0] or py < box[row, 1] or pz < box[row, 2] or px > box[row, 3] or py > box[row, 4]
        or pz > box[row, 5]
    )  # fmt: skip


@nb.njit(nogil=True, cache=True)
def frame_candidates(x, movable, tris, p0, q0, j0, p1, q1, j1, cap_inst, cap_local, cap_r, active, margin, extra):
    """Contact candidates for a frame (see broad_phase): each capsule's reach is its radius, plus how far its
    ends move over the frame (start pose p0/q0/j0 to end pose p1/q1/j1), plus `margin` and `extra` (summed in
    that order). One call from the step's shell instead of a dozen small numpy calls."""
    k = p0.shape[0]
    n_caps = cap_inst.size
    P, R, jaw = np.empty((k, 3)), np.empty((k, 9)), np.empty(k)
    a0, b0 = np.empty((n_caps, 3)), np.empty((n_caps, 3))
    a1, b1 = np.empty((n_caps, 3)), np.empty((n_caps, 3))
    interpolate_frames(p0, q0, j0, p1, q1, j1, 0.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, a0, b0)
    interpolate_frames(p0, q0, j0, p1, q1, j1, 1.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, a1, b1)
    reach = np.empty(n_caps)
    for j in range(n_caps):
        # The same rounding as np.linalg.norm(..., axis=1) (squares summed in order) and the same sums.
        dx, dy, dz = a1[j, 0] - a0[j, 0], a1[j, 1] - a0[j, 1], a1[j, 2] - a0[j, 2]
        da = math.sqrt(dx * dx + dy * dy + dz * dz)
        dx, dy, dz = b1[j, 0] - b0[j, 0], b1[j, 1] - b0[j, 1], b1[j, 2] - b0[j, 2]
        db = math.sqrt(dx * dx + dy * dy + dz * dz)
        reach[j] = cap_r[j] + max(da, db) + margin + extra
    return broad_phase(x, movable, tris, a0, b0, reach, cap_inst, active, k)


@nb.njit(nogil=True, cache=True)
def broad_phase(x, movable, tris, a, b, reach, cap_inst, active, n_inst):
    """Contact candidates for the frame: (vertex triples, weights, instrument row) of every movable vertex
    and every surface-triangle centre within `reach[j]` of an active capsule j (segment a-b).

    Each capsule's reach box (its segment's bounding box grown by the reach, and by a hair more so that
    round-off can never make the box reject a point the exact test accepts), and the box around those boxes,
    reject most points cheaply: the same candidates, in the same order, as testing every capsule."""
    n_points = movable.size + tris.shape[0]
    caps = np.flatnonzero(active)
    box = np.empty((caps.size + 1, 6))  # each active capsule's reach box, then the box around them all
    box[caps.size, :3] = np.inf
    box[caps.size, 3:] = -np.inf
    for c in range(caps.size):
        j = caps[c]
        grow = reach[j] * (1.0 + 1e-9) + 1e-12
        for d in range(3):
            box[c, d] = min(a[j, d], b[j, d]) - grow
            box[c, 3 + d] = max(a[j, d], b[j, d]) + grow
            box[caps.size, d] = min(box[caps.size, d], box[c, d])
            box[caps.size, 3 + d] = max(box[caps.size, 3 + d], box[c, 3 + d])
    hit = np.zeros((n_inst, n_points), dtype=np.bool_)
    count = 0
    for p in range(n_points):
        if p < movable.size:
            v = movable[p]
            px, py, pz = x[v, 0], x[v, 1], x[v, 2]
        else:
            t = p - movable.size
            px = (x[tris[t, 0], 0] + x[tris[t, 1], 0] + x[tris[t, 2], 0]) / 3.0
            py = (x[tris[t, 0], 1] + x[tris[t, 1], 1] + x[tris[t, 2], 1]) / 3.0
            pz = (x[tris[t, 0], 2] + x[tris[t, 1], 2] + x[tris[t, 2], 2]) / 3.0
        if _outside(px, py, pz, box, caps.size):
            continue
        for c in range(caps.size):
            if _outside(px, py, pz, box, c):
                continue
            j = caps[c]
            k = cap_inst[j]
            if not hit[k, p] and _near_segment(px, py, pz, a, b, j, reach[j]):
                hit[k, p] = True
                count += 1
    verts = np.empty((count, 3), dtype=np.int32)
    weights = np.zeros((count, 3))
    inst = np.empty(count, dtype=np.int32)
    c = 0
    for k in range(n_inst):
        for p in range(n_points):
            if not hit[k, p]:
                continue
            if p < movable.size:
                verts[c, 0] = verts[c, 1] = verts[c, 2] = movable[p]
                weights[c, 0] = 1.0
            else:
                for q in range(3):
                    verts[c, q] = tris[p - movable.size, q]
                    weights[c, q] = 1.0 / 3.0
            inst[c] = k
            c += 1
    return verts, weights, inst
