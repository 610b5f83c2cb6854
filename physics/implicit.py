"""The implicit frame kernel: backward Euler over the whole frame, Newton steps solved by preconditioned CG.

The alternative to XPBD's small steps for stiff tissue (as SOFA does it): per frame, minimise the incremental
potential

    E(x) = sum_i m_i / (2 h^2) |x_i - y_i|^2 + elastic(x) + springs(x),   y = x + h v + h^2 g

(elastic: the same stable Neo-Hookean energy as physics.reference; springs: anchors and grasp points with the
XPBD solver's compliances) with `newton_steps` Newton steps, each solved by `cg_iterations` of conjugate
gradients preconditioned by the 3x3 diagonal blocks of the Hessian (exact: the det term adds nothing to them).
The Hessian is never assembled: CG multiplies by it tet by tet, its det term with a coefficient limited so each
tet's part stays positive semi-definite. The gradient is exact, so at rest the frame's fixed point is the static
equilibrium of the energy whatever the iteration counts: the error XPBD carries (stiffness x h^2 / mass) is not
there. Instrument and environment contact are projected once per frame after the solve (frame-start to
frame-end capsules, so friction sees the capsules' motion).

Deterministic for any thread count: tets write their own corner rows, vertices gather them in a fixed order
(an incidence list built with the model), springs are added serially and dot products sum fixed blocks in order.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from physics.coarse_space import COARSE_AGGREGATES, aggregates, cholesky, coarse_matrix, solve_coarse
from physics.contact import environment_contact, instrument_contacts
from physics.kinematics import grasp_targets, interpolate_frames, world_capsules
from physics.neo_hookean import serial_twin
from physics.velocity_guard import CLAMPED, RESET, guard_velocity

FAST = {"nogil": True, "error_model": "numpy"}  # no fastmath: compiled and cached kernels give the same bits
DOT_BLOCKS = 64  # dot products add this many fixed blocks in order (independent of the thread count)
CG_ITERATIONS = 10  # with the coarse space: at rest within 1%; fewer lets a held grasp jitter (8: 10x the force noise)
NEWTON_STEPS = 1
CONTACT_TOLERANCE = 1e-5  # m: a vertex this close to an environment shape (or inside it) may rest on it
LINE_SEARCH_HALVINGS = 6  # a Newton step that raises the frame's energy is halved up to this many times


class FrameTopology:
    """What the implicit frame derives from the model's topology (a Solver holds one, rebuilt when notified):
    the live tets and their rest data, each vertex's corner slots, the coarse space's aggregates, and the
    coarse factor for the last frame length and stiffness (rebuilt when either changes)."""

    def __init__(self, model, previous: FrameTopology | None = None, coarse_aggregates: int = COARSE_AGGREGATES):
        """previous: the topology this one replaces; its incidence of all the model's tets (dead or alive) is
        reused when the model still has the same tets array, so a cut or burn only filters it (no sort)."""
        if previous is not None and previous._all_tets is model.tets and previous._n_vertices == model.n_vertices:
            self._all_tets, self._all_slots, self._slot_vertex = (
                previous._all_tets, previous._all_slots, previous._slot_vertex
            )  # fmt: skip
        else:
            self._all_tets = model.tets
            _, self._all_slots = incidence(model.tets.astype(np.int64), model.n_vertices)
            self._slot_vertex = model.tets.ravel()[self._all_slots]
        self._n_vertices = model.n_vertices
        alive = model.alive
        self.live = np.flatnonzero(alive)
        self.tets = np.ascontiguousarray(model.tets[self.live], dtype=np.int64)
        self.B = np.ascontiguousarray(model.dm_inv[self.live])
        self.gamma = np.ascontiguousarray(model.gamma[self.live])
        # The live tets' incidence, as incidence(self.tets) would sort it: the kept slots stay in vertex order
        # and, within a vertex, in tet order; only their numbers change to the live tets' compact ids.
        owner = self._all_slots // 4
        keep = alive[owner]
        compact = np.cumsum(alive) - 1
        self.slots = compact[owner[keep]] * 4 + self._all_slots[keep] % 4
        self.start = np.zeros(model.n_vertices + 1, np.int64)
        np.cumsum(np.bincount(self._slot_vertex[keep], minlength=model.n_vertices), out=self.start[1:])
        self.agg, self.n_agg = aggregates(model.rest_positions, model.inv_mass > 0, coarse_aggregates)
        self.anchors = np.ascontiguousarray(model.anchor_vertex, dtype=np.int64)
        self._key: tuple | None = None
        self._factor = np.zeros((0, 0))

    def coarse(self, model, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(aggregate per vertex, Cholesky factor of P^T A P at rest) for frames of dt seconds."""
        alpha_dev, alpha_hyd = model.alpha_dev[self.live], model.alpha_hyd[self.live]
        key = self._key
        if (
            key is None
            or key[0] != dt
            or key[3] != model.anchor_compliance
            or not (np.array_equal(key[1], alpha_dev) and np.array_equal(key[2], alpha_hyd))
        ):
            if self.n_agg == 0:
                self._factor = np.zeros((0, 0))
            else:
                A = coarse_matrix(
                    model.rest_positions, self.tets, self.B, 1.0 / alpha_dev, 1.0 / alpha_hyd, self.gamma,
                    self.agg, self.n_agg, model.mass, 1.0 / (dt * dt), self.anchors, 1.0 / model.anchor_compliance,
                )  # fmt: skip
                self._factor = cholesky(A)
            self._key = (dt, alpha_dev, alpha_hyd, model.anchor_compliance)
        return self.agg, self._factor


def incidence(tets: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each vertex's corner slots (t * 4 + corner) over the given tets, in increasing slot order."""
    slots = np.argsort(tets.ravel(), kind="stable").astype(np.int64)
    counts = np.bincount(tets.ravel(), minlength=n_vertices)
    start = np.zeros(n_vertices + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    return start, slots


@nb.njit(inline="always", **FAST)
def _column(x, tets, B, t, c):
    """Column c of the deformation gradient of tet t: sum_r (x_{r+1} - x_0) B[r, c] (scalars: no allocation)."""
    i0, i1, i2, i3 = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
    b1, b2, b3 = B[t, c], B[t, 3 + c], B[t, 6 + c]
    fx = (x[i1, 0] - x[i0, 0]) * b1 + (x[i2, 0] - x[i0, 0]) * b2 + (x[i3, 0] - x[i0, 0]) * b3
    fy = (x[i1, 1] - x[i0, 1]) * b1 + (x[i2, 1] - x[i0, 1]) * b2 + (x[i3, 1] - x[i0, 1]) * b3
    fz = (x[i1, 2] - x[i0, 2]) * b1 + (x[i2, 2] - x[i0, 2]) * b2 + (x[i3, 2] - x[i0, 2]) * b3
    return fx, fy, fz


@nb.njit(inline="always", **FAST)
def _cross(a0, a1, a2, b0, b1, b2):
    return a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0


@nb.njit(inline="always", **FAST)
def _scatter_corners(p0x, p0y, p0z, p1x, p1y, p1z, p2x, p2y, p2z, B, t, out):
    """out[t, a, :] = sum_c Bfull[a, c] P_c (corner 0: minus the sum of the others)."""
    for r in range(3):
        b0, b1, b2 = B[t, 3 * r], B[t, 3 * r + 1], B[t, 3 * r + 2]
        out[t, r + 1, 0] = b0 * p0x + b1 * p1x + b2 * p2x
        out[t, r + 1, 1] = b0 * p0y + b1 * p1y + b2 * p2y
        out[t, r + 1, 2] = b0 * p0z + b1 * p1z + b2 * p2z
    for d in range(3):
        out[t, 0, d] = -(out[t, 1, d] + out[t, 2, d] + out[t, 3, d])


@nb.njit(inline="always", **FAST)
def _tet_energy_at(x, tets, B, k_dev, k_hyd, gamma, t):
    """Elastic energy of tet t: k_dev / 2 |F|^2 + k_hyd / 2 (det F - gamma)^2 (as physics.reference)."""
    f0x, f0y, f0z = _column(x, tets, B, t, 0)
    f1x, f1y, f1z = _column(x, tets, B, t, 1)
    f2x, f2y, f2z = _column(x, tets, B, t, 2)
    c0x, c0y, c0z = _cross(f1x, f1y, f1z, f2x, f2y, f2z)
    j = f0x * c0x + f0y * c0y + f0z * c0z - gamma[t]
    nf2 = f0x * f0x + f0y * f0y + f0z * f0z + f1x * f1x + f1y * f1y + f1z * f1z + f2x * f2x + f2y * f2y + f2z * f2z
    return 0.5 * k_dev[t] * nf2 + 0.5 * k_hyd[t] * j * j


def _tet_energies(x, tets, B, k_dev, k_hyd, gamma, out):
    for t in nb.prange(tets.shape[0]):
        out[t] = _tet_energy_at(x, tets, B, k_dev, k_hyd, gamma, t)


def _tet_setup(x, tets, B, k_dev, k_hyd, gamma, Fs, Cs, geo, grad_rows, diag_rows):
    """Per tet at x: F and cof F (kept for the Hessian products), the det term's limited coefficient, the
    elastic gradient's corner rows and the diagonal 3x3 blocks of the tet's Hessian (corner rows, 9 each)."""
    m = tets.shape[0]
    for t in nb.prange(m):
        f0x, f0y, f0z = _column(x, tets, B, t, 0)
        f1x, f1y, f1z = _column(x, tets, B, t, 1)
        f2x, f2y, f2z = _column(x, tets, B, t, 2)
        c0x, c0y, c0z = _cross(f1x, f1y, f1z, f2x, f2y, f2z)
        c1x, c1y, c1z = _cross(f2x, f2y, f2z, f0x, f0y, f0z)
        c2x, c2y, c2z = _cross(f0x, f0y, f0z, f1x, f1y, f1z)
        J = f0x * c0x + f0y * c0y + f0z * c0z
        kd = k_dev[t]
        s = k_hyd[t] * (J - gamma[t])
        Fs[t, 0], Fs[t, 1], Fs[t, 2], Fs[t, 3], Fs[t, 4] = f0x, f0y, f0z, f1x, f1y
        Fs[t, 5], Fs[t, 6], Fs[t, 7], Fs[t, 8] = f1z, f2x, f2y, f2z
        Cs[t, 0], Cs[t, 1], Cs[t, 2], Cs[t, 3], Cs[t, 4] = c0x, c0y, c0z, c1x, c1y
        Cs[t, 5], Cs[t, 6], Cs[t, 7], Cs[t, 8] = c1z, c2x, c2y, c2z
        nf2 = f0x * f0x + f0y * f0y + f0z * f0z + f1x * f1x + f1y * f1y + f1z * f1z + f2x * f2x + f2y * f2y + f2z * f2z
        # The det term's Hessian has eigenvalues up to about the largest singular value times its coefficient s;
        # k_dev I outweighs it when |s| <= k_dev / sigma (sigma: here the RMS singular value |F| / sqrt 3, exact
        # at rest where the limit is not reached). Limiting s keeps the product positive; the gradient stays exact.
        lim = k_dev[t] / max(math.sqrt(nf2 / 3.0), 1e-6)
        geo[t] = min(max(s, -lim), lim)
        _scatter_corners(
            kd * f0x + s * c0x, kd * f0y + s * c0y, kd * f0z + s * c0z,
            kd * f1x + s * c1x, kd * f1y + s * c1y, kd * f1z + s * c1z,
            kd * f2x + s * c2x, kd * f2y + s * c2y, kd * f2z + s * c2z, B, t, grad_rows,
        )  # fmt: skip
        # Diagonal blocks: k_dev |b_a|^2 I + k_hyd g_a g_a^T, g_a = dJ/dx_a (the det term's skew blocks cancel).
        for a in range(4):
            b0 = b1 = b2 = 0.0
            if a == 0:
                for r in range(3):
                    b0 -= B[t, 3 * r]
                    b1 -= B[t, 3 * r + 1]
                    b2 -= B[t, 3 * r + 2]
            else:
                b0, b1, b2 = B[t, 3 * (a - 1)], B[t, 3 * (a - 1) + 1], B[t, 3 * (a - 1) + 2]
            bb = kd * (b0 * b0 + b1 * b1 + b2 * b2)
            g0 = b0 * c0x + b1 * c1x + b2 * c2x
            g1 = b0 * c0y + b1 * c1y + b2 * c2y
            g2 = b0 * c0z + b1 * c1z + b2 * c2z
            kh = k_hyd[t]
            diag_rows[t, a, 0] = bb + kh * g0 * g0
            diag_rows[t, a, 1] = kh * g0 * g1
            diag_rows[t, a, 2] = kh * g0 * g2
            diag_rows[t, a, 3] = kh * g1 * g0
            diag_rows[t, a, 4] = bb + kh * g1 * g1
            diag_rows[t, a, 5] = kh * g1 * g2
            diag_rows[t, a, 6] = kh * g2 * g0
            diag_rows[t, a, 7] = kh * g2 * g1
            diag_rows[t, a, 8] = bb + kh * g2 * g2


def _tet_product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, rows):
    """rows[t, a] = (H_t p)_a: the tet's Hessian (det term limited) times p, per corner."""
    m = tets.shape[0]
    for t in nb.prange(m):
        d0x, d0y, d0z = _column(p, tets, B, t, 0)
        d1x, d1y, d1z = _column(p, tets, B, t, 1)
        d2x, d2y, d2z = _column(p, tets, B, t, 2)
        cd = (
            Cs[t, 0] * d0x + Cs[t, 1] * d0y + Cs[t, 2] * d0z + Cs[t, 3] * d1x + Cs[t, 4] * d1y + Cs[t, 5] * d1z
            + Cs[t, 6] * d2x + Cs[t, 7] * d2y + Cs[t, 8] * d2z
        )  # fmt: skip
        kd, kh, s = k_dev[t], k_hyd[t] * cd, geo[t]
        f0x, f0y, f0z, f1x, f1y, f1z, f2x, f2y, f2z = (
            Fs[t, 0], Fs[t, 1], Fs[t, 2], Fs[t, 3], Fs[t, 4], Fs[t, 5], Fs[t, 6], Fs[t, 7], Fs[t, 8]
        )  # fmt: skip
        # d(cof F)[dF]: c0 = f1 x f2, c1 = f2 x f0, c2 = f0 x f1.
        q0x = kd * d0x + kh * Cs[t, 0] + s * ((d1y * f2z - d1z * f2y) + (f1y * d2z - f1z * d2y))
        q0y = kd * d0y + kh * Cs[t, 1] + s * ((d1z * f2x - d1x * f2z) + (f1z * d2x - f1x * d2z))
        q0z = kd * d0z + kh * Cs[t, 2] + s * ((d1x * f2y - d1y * f2x) + (f1x * d2y - f1y * d2x))
        q1x = kd * d1x + kh * Cs[t, 3] + s * ((d2y * f0z - d2z * f0y) + (f2y * d0z - f2z * d0y))
        q1y = kd * d1y + kh * Cs[t, 4] + s * ((d2z * f0x - d2x * f0z) + (f2z * d0x - f2x * d0z))
        q1z = kd * d1z + kh * Cs[t, 5] + s * ((d2x * f0y - d2y * f0x) + (f2x * d0y - f2y * d0x))
        q2x = kd * d2x + kh * Cs[t, 6] + s * ((d0y * f1z - d0z * f1y) + (f0y * d1z - f0z * d1y))
        q2y = kd * d2y + kh * Cs[t, 7] + s * ((d0z * f1x - d0x * f1z) + (f0z * d1x - f0x * d1z))
        q2z = kd * d2z + kh * Cs[t, 8] + s * ((d0x * f1y - d0y * f1x) + (f0x * d1y - f0y * d1x))
        _scatter_corners(q0x, q0y, q0z, q1x, q1y, q1z, q2x, q2y, q2z, B, t, rows)


def _gather(rows, start, slots, width, out):
    """out[i, :width] = sum of vertex i's corner rows in slot order (rows viewed as (tets * 4, width))."""
    flat = rows.reshape(-1, width)
    n = start.shape[0] - 1
    for i in nb.prange(n):
        for d in range(width):
            acc = 0.0
            for k in range(start[i], start[i + 1]):
                acc += flat[slots[k], d]
            out[i, d] = acc


def _energy_change(e_new, e_old, partial):
    """sum (e_new - e_old) and sum |e_old| (the round-off scale), each as DOT_BLOCKS blocks added in order."""
    n = e_new.shape[0]
    size = (n + DOT_BLOCKS - 1) // DOT_BLOCKS
    for k in nb.prange(DOT_BLOCKS):
        acc = 0.0
        mag = 0.0
        for j in range(k * size, min(n, (k + 1) * size)):
            acc += e_new[j] - e_old[j]
            mag += abs(e_old[j])
        partial[k] = acc
        partial[DOT_BLOCKS + k] = mag
    total = 0.0
    scale = 0.0
    for k in range(DOT_BLOCKS):
        total += partial[k]
        scale += partial[DOT_BLOCKS + k]
    return total, scale


def _dot(a, b, partial):
    """sum a * b over all entries, as DOT_BLOCKS blocks added in order."""
    fa = a.reshape(-1)
    fb = b.reshape(-1)
    n = fa.shape[0]
    size = (n + DOT_BLOCKS - 1) // DOT_BLOCKS
    for k in nb.prange(DOT_BLOCKS):
        acc = 0.0
        for j in range(k * size, min(n, (k + 1) * size)):
            acc += fa[j] * fb[j]
        partial[k] = acc
    total = 0.0
    for k in range(DOT_BLOCKS):
        total += partial[k]
    return total


@nb.njit(inline="always", **FAST)
def _environment_normal(x, i, planes, spheres, boxes, tol):
    """The outward normal of the first environment shape vertex i touches (within tol) or is inside, else 0."""
    for k in range(planes.shape[0]):
        nx, ny, nz = planes[k, 0], planes[k, 1], planes[k, 2]
        if x[i, 0] * nx + x[i, 1] * ny + x[i, 2] * nz - planes[k, 3] <= tol:
            return True, nx, ny, nz
    for k in range(spheres.shape[0]):
        rx, ry, rz = x[i, 0] - spheres[k, 0], x[i, 1] - spheres[k, 1], x[i, 2] - spheres[k, 2]
        dist = math.sqrt(rx * rx + ry * ry + rz * rz)
        if dist <= spheres[k, 3] + tol and dist > 1e-12:
            return True, rx / dist, ry / dist, rz / dist
    for k in range(boxes.shape[0]):
        best = 1e30
        axis = -1
        sign = 1.0
        for a in range(3):
            local = x[i, a] - boxes[k, a]
            pen = boxes[k, 3 + a] + tol - abs(local)
            if pen < 0.0:
                axis = -2
                break
            if pen < best:
                best = pen
                axis = a
                sign = 1.0 if local >= 0.0 else -1.0
        if axis >= 0:
            return True, sign if axis == 0 else 0.0, sign if axis == 1 else 0.0, sign if axis == 2 else 0.0
    return False, 0.0, 0.0, 0.0


@nb.njit(inline="always", **FAST)
def _filter(S, i, a, b, c):
    """(a, b, c) through vertex i's contact filter S[i] (3x3 row-major: identity, I - n n^T or zero)."""
    return (
        S[i, 0] * a + S[i, 1] * b + S[i, 2] * c,
        S[i, 3] * a + S[i, 4] * b + S[i, 5] * c,
        S[i, 6] * a + S[i, 7] * b + S[i, 8] * c,
    )


def _precondition(inv_diag, S, r, z, agg, coarse_factor, rc, yc):
    """z = S (D^-1 + P (P^T A P)^-1 P^T) r: block Jacobi plus the coarse space's correction (physics.coarse_space;
    r is already filtered), filtered by the contact constraint. The coarse part is serial, in vertex order."""
    n = r.shape[0]
    nc = coarse_factor.shape[0]
    if nc > 0:
        for j in range(nc):
            rc[j] = 0.0
        for i in range(n):
            g = agg[i]
            if g >= 0:
                for d in range(3):
                    rc[3 * g + d] += r[i, d]
        solve_coarse(coarse_factor, rc, yc)
    for i in nb.prange(n):
        a = inv_diag[i, 0] * r[i, 0] + inv_diag[i, 1] * r[i, 1] + inv_diag[i, 2] * r[i, 2]
        b = inv_diag[i, 3] * r[i, 0] + inv_diag[i, 4] * r[i, 1] + inv_diag[i, 5] * r[i, 2]
        c = inv_diag[i, 6] * r[i, 0] + inv_diag[i, 7] * r[i, 1] + inv_diag[i, 8] * r[i, 2]
        g = agg[i]
        if nc > 0 and g >= 0:
            a += yc[3 * g]
            b += yc[3 * g + 1]
            c += yc[3 * g + 2]
        z[i, 0], z[i, 1], z[i, 2] = _filter(S, i, a, b, c)


@nb.njit(inline="always", **FAST)
def _spring_point(x, verts, weights, g, d):
    return weights[g, 0] * x[verts[g, 0], d] + weights[g, 1] * x[verts[g, 1], d] + weights[g, 2] * x[verts[g, 2], d]


@nb.njit(**FAST)
def _springs_gradient(x, verts, weights, targets, stiffness, grad, diag):
    """Add the springs' gradient (stiffness * (p - target) spread by weight) and diagonal blocks, serially."""
    for g in range(verts.shape[0]):
        for d in range(3):
            r = stiffness * (_spring_point(x, verts, weights, g, d) - targets[g, d])
            for c in range(3):
                grad[verts[g, c], d] += weights[g, c] * r
        for c in range(3):
            w2 = weights[g, c] * weights[g, c] * stiffness
            v = verts[g, c]
            diag[v, 0] += w2
            diag[v, 4] += w2
            diag[v, 8] += w2


@nb.njit(**FAST)
def _springs_change(x, dx, t, verts, weights, targets, stiffness):
    """Change of the springs' energy from x to x + t dx: k/2 t dp . (t dp + 2 (p - target)), serially."""
    total = 0.0
    for g in range(verts.shape[0]):
        for d in range(3):
            dp = t * _spring_point(dx, verts, weights, g, d)
            total += 0.5 * stiffness * dp * (dp + 2.0 * (_spring_point(x, verts, weights, g, d) - targets[g, d]))
    return total


@nb.njit(**FAST)
def _springs_product(p, verts, weights, stiffness, out):
    for g in range(verts.shape[0]):
        for d in range(3):
            r = stiffness * _spring_point(p, verts, weights, g, d)
            for c in range(3):
                out[verts[g, c], d] += weights[g, c] * r


def _solve_frame(
    x, v, inv_mass, mass, damping, gravity, dt, newton_steps, cg_iterations, max_speed,
    tets, B, k_dev, k_hyd, gamma, start, slots, agg, coarse_factor,
    anchor_verts, anchor_weights, anchor_targets, anchor_alpha,
    planes, spheres, boxes, env_mu,
    p0, q0, j0, p1, q1, j1, inst_mu, cap_inst, cap_local, cap_r, cap_active,
    cand_verts, cand_weights, cand_inst,
    g_inst, g_verts, g_weights, g_local, g_alpha,
    out_inst_force, out_anchor_force, out_grasp_force, out_counts, out_residual,
):  # fmt: skip
    n = x.shape[0]
    m = tets.shape[0]
    h = dt
    inv_h2 = 1.0 / (h * h)
    k_inst = p0.shape[0]
    P = np.empty((k_inst, 3))
    R = np.empty((k_inst, 9))
    jaw = np.empty(k_inst)
    pa = np.empty((cap_inst.size, 3))
    pb = np.empty((cap_inst.size, 3))
    wa = np.empty((cap_inst.size, 3))
    wb = np.empty((cap_inst.size, 3))
    targets = np.empty((g_inst.size, 3))
    interpolate_frames(p0, q0, j0, p1, q1, j1, 0.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, pa, pb)
    interpolate_frames(p0, q0, j0, p1, q1, j1, 1.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, wa, wb)
    grasp_targets(g_inst, g_local, P, R, targets)
    k_anchor = 1.0 / anchor_alpha
    k_grasp = 1.0 / g_alpha

    x_prev = x.copy()
    y = np.empty_like(x)
    free = np.empty(n)
    mh = np.empty(n)
    for i in nb.prange(n):
        free[i] = 1.0 if inv_mass[i] > 0.0 else 0.0
        mh[i] = mass[i] * inv_h2
        for d in range(3):
            y[i, d] = x[i, d] + free[i] * (h * v[i, d] + h * h * gravity[d])
            # Newton starts from the motion without gravity's pull of this frame: at rest that is x itself, so
            # the frame's fixed point is where the gradient of the static energy vanishes (exact equilibrium
            # whatever the Hessian's approximation and the CG budget); starting from y would leave a bias.
            x[i, d] = x[i, d] + free[i] * h * v[i, d]

    Fs = np.empty((m, 9))
    Cs = np.empty((m, 9))
    geo = np.empty(m)
    rows3 = np.empty((m, 4, 3))
    rows9 = np.empty((m, 4, 9))
    grad = np.empty((n, 3))
    diag = np.empty((n, 9))
    inv_diag = np.empty((n, 9))
    r = np.empty((n, 3))
    z = np.empty((n, 3))
    p = np.empty((n, 3))
    q = np.empty((n, 3))
    dx = np.empty((n, 3))
    partial = np.empty(2 * DOT_BLOCKS)
    rc = np.empty(coarse_factor.shape[0])
    yc = np.empty(coarse_factor.shape[0])
    e_old = np.empty(m)
    e_new = np.empty(m)
    trial = np.empty_like(x)
    residual = 0.0
    S = np.empty((n, 9))
    touching = np.zeros(n, np.int64)
    for i in nb.prange(n):
        for q_ in range(9):
            S[i, q_] = 1.0 if q_ % 4 == 0 else 0.0
    newton = 0
    classified = False
    while newton < newton_steps:
        _tet_setup(x, tets, B, k_dev, k_hyd, gamma, Fs, Cs, geo, rows3, rows9)
        _gather(rows3, start, slots, 3, grad)
        _gather(rows9, start, slots, 9, diag)
        _springs_gradient(x, anchor_verts, anchor_weights, anchor_targets, k_anchor, grad, diag)
        _springs_gradient(x, g_verts, g_weights, targets, k_grasp, grad, diag)
        for i in nb.prange(n):
            for d in range(3):
                grad[i, d] += mh[i] * (x[i, d] - y[i, d])
                r[i, d] = -grad[i, d] * free[i]
                dx[i, d] = 0.0
        if not classified:
            classified = True
            # Environment contact enters the solve as a filter (Baraff and Witkin 1998) decided from this state
            # alone: a vertex touching a shape and pressed into it by the frame's forces (the gradient at the
            # start) sticks where it is while static friction can hold it, slides along the surface otherwise.
            # Its start moves (to where it was, or off its motion into the surface): then the gradient again.
            for i in nb.prange(n):
                if free[i] == 0.0:
                    continue
                hit, nx, ny, nz = _environment_normal(x_prev, i, planes, spheres, boxes, CONTACT_TOLERANCE)
                if not hit:
                    continue
                fn = -(r[i, 0] * nx + r[i, 1] * ny + r[i, 2] * nz)  # the push into the surface (N)
                if fn <= 0.0:
                    continue
                tx = r[i, 0] + fn * nx
                ty = r[i, 1] + fn * ny
                tz = r[i, 2] + fn * nz
                touching[i] = 1
                if tx * tx + ty * ty + tz * tz <= (env_mu * fn) * (env_mu * fn):
                    for q_ in range(9):
                        S[i, q_] = 0.0
                    for d in range(3):
                        x[i, d] = x_prev[i, d]
                else:
                    S[i, 0], S[i, 1], S[i, 2] = 1.0 - nx * nx, -nx * ny, -nx * nz
                    S[i, 3], S[i, 4], S[i, 5] = -ny * nx, 1.0 - ny * ny, -ny * nz
                    S[i, 6], S[i, 7], S[i, 8] = -nz * nx, -nz * ny, 1.0 - nz * nz
                    vn = v[i, 0] * nx + v[i, 1] * ny + v[i, 2] * nz
                    if vn < 0.0:
                        x[i, 0] -= h * vn * nx
                        x[i, 1] -= h * vn * ny
                        x[i, 2] -= h * vn * nz
            if touching.sum() > 0:
                continue
        for i in nb.prange(n):
            r[i, 0], r[i, 1], r[i, 2] = _filter(S, i, r[i, 0], r[i, 1], r[i, 2])
            a, b, c = diag[i, 0] + mh[i], diag[i, 1], diag[i, 2]
            d_, e, f = diag[i, 3], diag[i, 4] + mh[i], diag[i, 5]
            g_, hh, k = diag[i, 6], diag[i, 7], diag[i, 8] + mh[i]
            co0 = e * k - f * hh
            co1 = f * g_ - d_ * k
            co2 = d_ * hh - e * g_
            det = a * co0 + b * co1 + c * co2
            inv = 0.0 if free[i] == 0.0 or det <= 0.0 else 1.0 / det
            inv_diag[i, 0] = co0 * inv
            inv_diag[i, 1] = (c * hh - b * k) * inv
            inv_diag[i, 2] = (b * f - c * e) * inv
            inv_diag[i, 3] = co1 * inv
            inv_diag[i, 4] = (a * k - c * g_) * inv
            inv_diag[i, 5] = (c * d_ - a * f) * inv
            inv_diag[i, 6] = co2 * inv
            inv_diag[i, 7] = (b * g_ - a * hh) * inv
            inv_diag[i, 8] = (a * e - b * d_) * inv
        residual = math.sqrt(_dot(r, r, partial))
        _precondition(inv_diag, S, r, z, agg, coarse_factor, rc, yc)
        for i in nb.prange(n):
            for d in range(3):
                p[i, d] = z[i, d]
        rz = _dot(r, z, partial)
        for _it in range(cg_iterations):
            if rz <= 0.0:
                break
            _tet_product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, rows3)
            _gather(rows3, start, slots, 3, q)
            _springs_product(p, anchor_verts, anchor_weights, k_anchor, q)
            _springs_product(p, g_verts, g_weights, k_grasp, q)
            for i in nb.prange(n):
                for d in range(3):
                    q[i, d] = (q[i, d] + mh[i] * p[i, d]) * free[i]
                q[i, 0], q[i, 1], q[i, 2] = _filter(S, i, q[i, 0], q[i, 1], q[i, 2])
            pq = _dot(p, q, partial)
            if not pq > 0.0:  # no curvature left along p (or NaN): keep what CG has
                break
            alpha = rz / pq
            for i in nb.prange(n):
                for d in range(3):
                    dx[i, d] += alpha * p[i, d]
                    r[i, d] -= alpha * q[i, d]
            _precondition(inv_diag, S, r, z, agg, coarse_factor, rc, yc)
            rz_new = _dot(r, z, partial)
            beta = rz_new / rz
            rz = rz_new
            for i in nb.prange(n):
                for d in range(3):
                    p[i, d] = z[i, d] + beta * p[i, d]
        # Backtracking line search on the frame's energy (its exact change: inertia and springs in closed form,
        # the tets one by one), so a large or nonlinear step cannot raise it; within round-off a step is taken.
        slope = _dot(grad, dx, partial)
        _tet_energies(x, tets, B, k_dev, k_hyd, gamma, e_old)
        t = 1.0
        for _ls in range(LINE_SEARCH_HALVINGS + 1):
            for i in nb.prange(n):
                for d in range(3):
                    trial[i, d] = x[i, d] + t * dx[i, d]
            _tet_energies(trial, tets, B, k_dev, k_hyd, gamma, e_new)
            change, scale = _energy_change(e_new, e_old, partial)
            inertia = 0.0
            for i in range(n):
                for d in range(3):
                    step = t * dx[i, d]
                    inertia += 0.5 * mh[i] * step * (step + 2.0 * (x[i, d] - y[i, d]))
            change += inertia
            change += _springs_change(x, dx, t, anchor_verts, anchor_weights, anchor_targets, k_anchor)
            change += _springs_change(x, dx, t, g_verts, g_weights, targets, k_grasp)
            if change <= 1e-4 * t * slope + 1e-12 * scale:
                break
            t *= 0.5
        for i in nb.prange(n):
            for d in range(3):
                x[i, d] = trial[i, d]
        newton += 1
    out_residual[0] = residual

    # Forces of the springs at the solved positions (N on the tissue), then contact once per frame.
    for g in range(anchor_verts.shape[0]):
        for d in range(3):
            out_anchor_force[g, d] += -k_anchor * (
                _spring_point(x, anchor_verts, anchor_weights, g, d) - anchor_targets[g, d]
            )
    for g in range(g_verts.shape[0]):
        for d in range(3):
            out_grasp_force[g, d] += -k_grasp * (_spring_point(x, g_verts, g_weights, g, d) - targets[g, d])
    out_counts[0] += instrument_contacts(
        x, x_prev, inv_mass, mass, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active,
        wa, wb, pa, pb, inst_mu, inv_h2, out_inst_force,
    )  # fmt: skip
    env_hits = 0
    resets = 0
    clamps = 0
    for i in nb.prange(n):
        if inv_mass[i] == 0.0:
            for d in range(3):
                x[i, d] = x_prev[i, d]
                v[i, d] = 0.0
            continue
        env_hits += environment_contact(x, x_prev, i, planes, spheres, boxes, env_mu)
        damp = 1.0 / (1.0 + damping[i] * h)
        vx = (x[i, 0] - x_prev[i, 0]) / h * damp
        vy = (x[i, 1] - x_prev[i, 1]) / h * damp
        vz = (x[i, 2] - x_prev[i, 2]) / h * damp
        outcome = guard_velocity(x, x_prev, v, i, vx, vy, vz, h, max_speed)
        resets += outcome == RESET
        clamps += outcome == CLAMPED
    out_counts[1] += env_hits + touching.sum()  # projected, and held by the solve's contact filter
    out_counts[2] += resets
    out_counts[3] += clamps


_PARALLEL = {"parallel": True, "cache": True, **FAST}
_SERIAL = {"cache": True, **FAST}
tet_setup = nb.njit(**_PARALLEL)(_tet_setup)
tet_energies = nb.njit(**_PARALLEL)(_tet_energies)
energy_change = nb.njit(**_PARALLEL)(_energy_change)
tet_energies_serial = nb.njit(**_SERIAL)(serial_twin(_tet_energies, "tet_energies_serial"))
energy_change_serial = nb.njit(**_SERIAL)(serial_twin(_energy_change, "energy_change_serial"))
tet_product = nb.njit(**_PARALLEL)(_tet_product)
gather = nb.njit(**_PARALLEL)(_gather)
dot = nb.njit(**_PARALLEL)(_dot)
precondition = nb.njit(**_PARALLEL)(_precondition)
precondition_serial = nb.njit(**_SERIAL)(serial_twin(_precondition, "precondition_serial"))
tet_setup_serial = nb.njit(**_SERIAL)(serial_twin(_tet_setup, "tet_setup_serial"))
tet_product_serial = nb.njit(**_SERIAL)(serial_twin(_tet_product, "tet_product_serial"))
gather_serial = nb.njit(**_SERIAL)(serial_twin(_gather, "gather_serial"))
dot_serial = nb.njit(**_SERIAL)(serial_twin(_dot, "dot_serial"))
solve_frame = nb.njit(**_PARALLEL)(
    serial_twin(
        _solve_frame, "solve_frame", _tet_setup=tet_setup, _tet_product=tet_product, _gather=gather, _dot=dot,
        _tet_energies=tet_energies, _energy_change=energy_change, _precondition=precondition,
    )
)  # fmt: skip
# One thread (a room's thread): no parallel launches, each of which takes the GIL back. Same order, same bits.
solve_frame_serial = nb.njit(**_SERIAL)(
    serial_twin(
        _solve_frame, "solve_frame_serial", _tet_setup=tet_setup_serial, _tet_product=tet_product_serial,
        _gather=gather_serial, _dot=dot_serial, _tet_energies=tet_energies_serial,
        _energy_change=energy_change_serial, _precondition=precondition_serial,
    )
)  # fmt: skip
