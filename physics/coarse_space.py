"""The implicit frame's coarse space: aggregates of vertices whose joint translations CG corrects globally.

Block-Jacobi CG moves information about one tet per iteration, so with the real-time budget (ten-odd
iterations) a stiff body's global modes (a cantilever's bending, a column's stretch) are left to creep over
many frames: measured at 20k tets with 10 iterations, a cantilever came to rest 10% short of its converged sag.
The two-level preconditioner adds a coarse correction: the movable vertices are grouped into lattice
aggregates (about COARSE_AGGREGATES of them), P sums a vector over each aggregate, and each CG iteration also
solves the Galerkin coarse system P^T A P (the frame's matrix at rest: inertia, tets, anchors) exactly, by a
Cholesky factor built when the topology changes. Everything here is serial and in a fixed order, so the factor
and every correction have the same bits for any thread count and for a fresh or a notified solver.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

FAST = {"nogil": True, "error_model": "numpy", "cache": True}  # no fastmath: compiled and cached kernels agree
COARSE_AGGREGATES = 64  # about this many aggregates (3 unknowns each): the factor is small, each solve cheap


def aggregates(rest: np.ndarray, movable: np.ndarray, target: int = COARSE_AGGREGATES) -> tuple[np.ndarray, int]:
    """Each vertex's aggregate (-1: not movable) on a lattice of roughly cubic cells over the movable
    vertices' bounding box with about `target` cells; occupied cells numbered in lattice order."""
    n = rest.shape[0]
    agg = np.full(n, -1, np.int64)
    ids = np.flatnonzero(movable)
    if ids.size == 0 or target < 1:
        return agg, 0
    lo, hi = rest[ids].min(axis=0), rest[ids].max(axis=0)
    extent = np.maximum(hi - lo, 1e-12)
    cell = (float(np.prod(extent)) / target) ** (1.0 / 3.0)
    dims = np.maximum(1, np.rint(extent / cell)).astype(np.int64)
    idx = np.minimum(((rest[ids] - lo) / extent * dims).astype(np.int64), dims - 1)
    key = (idx[:, 0] * dims[1] + idx[:, 1]) * dims[2] + idx[:, 2]
    used, compact = np.unique(key, return_inverse=True)
    agg[ids] = compact
    return agg, int(used.size)


@nb.njit(**FAST)
def coarse_matrix(x, tets, B, k_dev, k_hyd, gamma, agg, n_agg, mass, inv_h2, anchor_vertex, k_anchor):
    """P^T A P at positions x (the tets' Hessian with the det term's coefficient limited as in the CG product,
    inertia m / h^2, anchors), as a dense (3 n_agg)^2 matrix. A tet with every corner in one aggregate adds
    nothing (a translation does not strain it) and is skipped; so does one with no movable corner."""
    nc = 3 * n_agg
    A = np.zeros((nc, nc))
    beta = np.zeros((4, 3))
    group = np.empty(4, np.int64)
    F = np.empty((3, 3))
    C = np.empty((3, 3))
    q = np.empty((3, 3))  # q[:, c]: the F-space product's column c
    for t in range(tets.shape[0]):
        k = 0
        outside = False  # a corner that does not move (pinned): even one aggregate's translation strains the tet
        for a in range(4):
            g = agg[tets[t, a]]
            if g < 0:
                outside = True
                continue
            slot = -1
            for j in range(k):
                if group[j] == g:
                    slot = j
            if slot < 0:
                slot = k
                group[k] = g
                beta[k, 0] = beta[k, 1] = beta[k, 2] = 0.0
                k += 1
            # Row a of the full shape-gradient matrix (corner 0: minus the sum of the others).
            for c in range(3):
                beta[slot, c] += -(B[t, c] + B[t, 3 + c] + B[t, 6 + c]) if a == 0 else B[t, 3 * (a - 1) + c]
        if k == 0 or (k == 1 and not outside):
            continue
        i0 = tets[t, 0]
        for c in range(3):  # F's columns: sum_r (x_{r+1} - x_0) B[r, c]
            for d in range(3):
                F[d, c] = (
                    (x[tets[t, 1], d] - x[i0, d]) * B[t, c]
                    + (x[tets[t, 2], d] - x[i0, d]) * B[t, 3 + c]
                    + (x[tets[t, 3], d] - x[i0, d]) * B[t, 6 + c]
                )
        for c in range(3):  # cof F's columns: c0 = f1 x f2, c1 = f2 x f0, c2 = f0 x f1
            u, v = (c + 1) % 3, (c + 2) % 3
            C[0, c] = F[1, u] * F[2, v] - F[2, u] * F[1, v]
            C[1, c] = F[2, u] * F[0, v] - F[0, u] * F[2, v]
            C[2, c] = F[0, u] * F[1, v] - F[1, u] * F[0, v]
        J = F[0, 0] * C[0, 0] + F[1, 0] * C[1, 0] + F[2, 0] * C[2, 0]
        nf2 = 0.0
        for c in range(3):
            for d in range(3):
                nf2 += F[d, c] * F[d, c]
        s = k_hyd[t] * (J - gamma[t])
        lim = k_dev[t] / max(math.sqrt(nf2 / 3.0), 1e-6)
        s = min(max(s, -lim), lim)
        kd, kh = k_dev[t], k_hyd[t]
        for ii in range(k):
            for d in range(3):
                # dF of aggregate ii moved along axis d: column c is beta[ii, c] e_d.
                cd = beta[ii, 0] * C[d, 0] + beta[ii, 1] * C[d, 1] + beta[ii, 2] * C[d, 2]
                for c in range(3):
                    for e in range(3):
                        q[e, c] = kh * cd * C[e, c]
                    q[d, c] += kd * beta[ii, c]
                for c in range(3):
                    u, v = (c + 1) % 3, (c + 2) % 3
                    # d cof_c [dF] = d_u x f_v + f_u x d_v, with d_w = beta[ii, w] e_d.
                    for e in range(3):
                        e1, e2 = (e + 1) % 3, (e + 2) % 3
                        # (e_d x f)_e = delta(e1, d) f_e2 - delta(e2, d) f_e1
                        du = 0.0
                        if e1 == d:
                            du += F[e2, v]
                        if e2 == d:
                            du -= F[e1, v]
                        dv = 0.0
                        if e2 == d:
                            dv += F[e1, u]
                        if e1 == d:
                            dv -= F[e2, u]
                        q[e, c] += s * (beta[ii, u] * du + beta[ii, v] * dv)
                col = 3 * group[ii] + d
                for jj in range(k):
                    row = 3 * group[jj]
                    for e in range(3):
                        A[row + e, col] += beta[jj, 0] * q[e, 0] + beta[jj, 1] * q[e, 1] + beta[jj, 2] * q[e, 2]
    for i in range(agg.shape[0]):
        g = agg[i]
        if g >= 0:
            for d in range(3):
                A[3 * g + d, 3 * g + d] += mass[i] * inv_h2
    for j in range(anchor_vertex.shape[0]):
        g = agg[anchor_vertex[j]]
        if g >= 0:
            for d in range(3):
                A[3 * g + d, 3 * g + d] += k_anchor
    for i in range(nc):  # exactly symmetric (the two halves were summed in different orders)
        for j in range(i):
            avg = 0.5 * (A[i, j] + A[j, i])
            A[i, j] = avg
            A[j, i] = avg
    return A


@nb.njit(**FAST)
def cholesky(A):
    """Lower-triangular L with L L^T = A (A symmetric positive definite), in a fixed order."""
    n = A.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        acc = A[j, j]
        for k in range(j):
            acc -= L[j, k] * L[j, k]
        if not acc > 0.0:
            raise ValueError("coarse matrix is not positive definite")
        L[j, j] = math.sqrt(acc)
        inv = 1.0 / L[j, j]
        for i in range(j + 1, n):
            acc = A[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            L[i, j] = acc * inv
    return L


@nb.njit(inline="always", nogil=True, error_model="numpy")
def solve_coarse(L, rc, yc):
    """yc = (L L^T)^-1 rc by forward and back substitution."""
    n = L.shape[0]
    for i in range(n):
        acc = rc[i]
        for k in range(i):
            acc -= L[i, k] * yc[k]
        yc[i] = acc / L[i, i]
    for i in range(n - 1, -1, -1):
        acc = yc[i]
        for k in range(i + 1, n):
            acc -= L[k, i] * yc[k]
        yc[i] = acc / L[i, i]
