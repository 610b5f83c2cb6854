"""Stable Neo-Hookean tet constraint (Macklin & Mueller 2021), deviatoric and hydrostatic solved together.

Energy per tet: V * (mu/2 * tr(F^T F) + lam/2 * (det F - gamma)^2) with gamma = 1 + mu/lam, written as two
XPBD constraints C_D = |F|_F (compliance 1/(mu V)) and C_H = det F - gamma (compliance 1/(lam V)). Here lam is
not Lame's lambda but lambda + mu (Smith et al. 2018, "Stable Neo-Hookean Flesh Simulation"; see stable_lame):
only then does the linearisation at rest give linear elasticity with the material's E and nu. At rest
their gradients are parallel, so solving them one after the other fights; the 2x2 coupled solve below is
exact at rest and behaves like a small Newton step on the full energy.
"""

from __future__ import annotations

import math
import types

import numba as nb
import numpy as np


def stable_lame(mu: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, lambda_hat) of the stable Neo-Hookean energy from Lame's (mu, lambda): lambda_hat = lambda + mu.

    At F = I + e (e symmetric) the energy is mu tr(e^2) + (lambda_hat - mu)/2 tr(e)^2 to second order, so
    lambda_hat = lambda + mu gives linear elasticity with the material's E and nu (with lambda_hat = lambda the
    body behaves as if its lambda were lambda - mu: 37% of E lost at nu 0.2, unstable near nu 0.1). Since
    lambda_hat >= mu > 0 for every nu in [0, 0.5), nu = 0 needs no special case."""
    mu = np.asarray(mu, dtype=np.float64)
    return mu, np.asarray(lam, dtype=np.float64) + mu


def rest_data(vertices: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-tet inverse rest matrix Dm^-1 flattened row-major (m, 9) and rest volume (m,)."""
    x0 = vertices[tets[:, 0]]
    dm = np.stack([vertices[tets[:, 1]] - x0, vertices[tets[:, 2]] - x0, vertices[tets[:, 3]] - x0], axis=2)
    volume = np.linalg.det(dm) / 6.0
    return np.linalg.inv(dm).reshape(-1, 9).copy(), volume


# Tets go through the solver in chunks of one colour (no shared vertex): gathered into small
# structure-of-arrays blocks, solved in a branch-free loop that LLVM vectorises (AVX2/AVX-512), then
# scattered back. Same result as sweeping them one by one, several times faster.
CHUNK = 32
# Each chunk's data is padded to a whole number of SIMD vectors (8 doubles: AVX-512; two AVX2 vectors), so the
# solve loop never falls back to its scalar remainder (a scalar tet cost ~3.5x a vectorised one; measured).
LANES = 8
# A tet is never stiffer per substep than this multiple of its deviatoric constraint (see solve_block).
STIFF_LIMIT = 2.0
NON_NEGATIVE = 0x7FFFFFFF  # a mask that keeps every valid offset and vertex id (see sweep_chunks)
# No fastmath: with it (contract, arcp, nsz, reassoc) a kernel compiled in the process and the same kernel loaded
# from numba's cache gave different bits (a 2k-tet grasp-and-pull: two hashes of the state), so a replay could not
# reproduce a live session; without it both agree and the sweep was no slower (measured: 2.41 against 2.48 ms per
# frame, 5.5k tets, one thread, under load).
FAST = {"nogil": True, "error_model": "numpy"}


@nb.njit(inline="always", **FAST)
def solve_block(E, W, B, alpha_dev, alpha_hyd, gamma, base, k, inv_dt2, D):
    """Coupled XPBD projection of k independent tets (lambda starts at zero: one iteration per substep).

    E (9, CHUNK): edges x1 - x0, x2 - x0, x3 - x0; W (4, S) inverse masses and B (9, S) Dm^-1 row-major,
    both in the model's blocks, this block's columns from `base`; D (12, CHUNK): position corrections out.
    """
    for j in range(k):
        t = base + j
        w0 = W[0, t]
        w1 = W[1, t]
        w2 = W[2, t]
        w3 = W[3, t]
        e1x = E[0, j]
        e1y = E[1, j]
        e1z = E[2, j]
        e2x = E[3, j]
        e2y = E[4, j]
        e2z = E[5, j]
        e3x = E[6, j]
        e3y = E[7, j]
        e3z = E[8, j]
        b00, b01, b02 = B[0, t], B[1, t], B[2, t]
        b10, b11, b12 = B[3, t], B[4, t], B[5, t]
        b20, b21, b22 = B[6, t], B[7, t], B[8, t]
        # F = Ds Dm^-1, by columns f_c = sum_r e_r B[r, c].
        f0x = e1x * b00 + e2x * b10 + e3x * b20
        f0y = e1y * b00 + e2y * b10 + e3y * b20
        f0z = e1z * b00 + e2z * b10 + e3z * b20
        f1x = e1x * b01 + e2x * b11 + e3x * b21
        f1y = e1y * b01 + e2y * b11 + e3y * b21
        f1z = e1z * b01 + e2z * b11 + e3z * b21
        f2x = e1x * b02 + e2x * b12 + e3x * b22
        f2y = e1y * b02 + e2y * b12 + e3y * b22
        f2z = e1z * b02 + e2z * b12 + e3z * b22
        norm_f = math.sqrt(
            f0x * f0x + f0y * f0y + f0z * f0z + f1x * f1x + f1y * f1y + f1z * f1z + f2x * f2x + f2y * f2y + f2z * f2z
        )
        inv_norm = 1.0 / max(norm_f, 1e-12)
        # Cofactor columns: d(det F)/dF.
        c0x = f1y * f2z - f1z * f2y
        c0y = f1z * f2x - f1x * f2z
        c0z = f1x * f2y - f1y * f2x
        c1x = f2y * f0z - f2z * f0y
        c1y = f2z * f0x - f2x * f0z
        c1z = f2x * f0y - f2y * f0x
        c2x = f0y * f1z - f0z * f1y
        c2y = f0z * f1x - f0x * f1z
        c2z = f0x * f1y - f0y * f1x
        det_f = f0x * c0x + f0y * c0y + f0z * c0z
        # Gradients w.r.t. x_r (r = 1..3): g_r = sum_c P_c B[r, c]; deviatoric P = F / |F|, hydrostatic P = cof F.
        d1x = (f0x * b00 + f1x * b01 + f2x * b02) * inv_norm
        d1y = (f0y * b00 + f1y * b01 + f2y * b02) * inv_norm
        d1z = (f0z * b00 + f1z * b01 + f2z * b02) * inv_norm
        d2x = (f0x * b10 + f1x * b11 + f2x * b12) * inv_norm
        d2y = (f0y * b10 + f1y * b11 + f2y * b12) * inv_norm
        d2z = (f0z * b10 + f1z * b11 + f2z * b12) * inv_norm
        d3x = (f0x * b20 + f1x * b21 + f2x * b22) * inv_norm
        d3y = (f0y * b20 + f1y * b21 + f2y * b22) * inv_norm
        d3z = (f0z * b20 + f1z * b21 + f2z * b22) * inv_norm
        d0x = -(d1x + d2x + d3x)
        d0y = -(d1y + d2y + d3y)
        d0z = -(d1z + d2z + d3z)
        h1x = c0x * b00 + c1x * b01 + c2x * b02
        h1y = c0y * b00 + c1y * b01 + c2y * b02
        h1z = c0z * b00 + c1z * b01 + c2z * b02
        h2x = c0x * b10 + c1x * b11 + c2x * b12
        h2y = c0y * b10 + c1y * b11 + c2y * b12
        h2z = c0z * b10 + c1z * b11 + c2z * b12
        h3x = c0x * b20 + c1x * b21 + c2x * b22
        h3y = c0y * b20 + c1y * b21 + c2y * b22
        h3z = c0z * b20 + c1z * b21 + c2z * b22
        h0x = -(h1x + h2x + h3x)
        h0y = -(h1y + h2y + h3y)
        h0z = -(h1z + h2z + h3z)
        s_dev = (
            w0 * (d0x * d0x + d0y * d0y + d0z * d0z)
            + w1 * (d1x * d1x + d1y * d1y + d1z * d1z)
            + w2 * (d2x * d2x + d2y * d2y + d2z * d2z)
            + w3 * (d3x * d3x + d3y * d3y + d3z * d3z)
        )
        # Stiffness limiter: C_D = |F| never reaches zero, so when the substep is long for this tet's
        # stiffness (compliance small next to s_dev) a full projection would overshoot towards collapse.
        # Both compliances are raised by the same factor (rest stays exact; converges as substeps grow).
        a_dev = alpha_dev[t] * inv_dt2
        scale = max(1.0, STIFF_LIMIT * s_dev / a_dev)
        a_dev = a_dev * scale
        a_hyd = alpha_hyd[t] * inv_dt2 * scale
        a11 = s_dev + a_dev
        a12 = (
            w0 * (d0x * h0x + d0y * h0y + d0z * h0z)
            + w1 * (d1x * h1x + d1y * h1y + d1z * h1z)
            + w2 * (d2x * h2x + d2y * h2y + d2z * h2z)
            + w3 * (d3x * h3x + d3y * h3y + d3z * h3z)
        )
        a22 = (
            w0 * (h0x * h0x + h0y * h0y + h0z * h0z)
            + w1 * (h1x * h1x + h1y * h1y + h1z * h1z)
            + w2 * (h2x * h2x + h2y * h2y + h2z * h2z)
            + w3 * (h3x * h3x + h3y * h3y + h3z * h3z)
            + a_hyd
        )
        rhs1 = -norm_f
        rhs2 = -(det_f - gamma[t])
        # det_a > 0 whenever a compliance is > 0; the floor only keeps a fully pinned tet finite.
        inv_det = 1.0 / max(a11 * a22 - a12 * a12, 1e-300)
        l_dev = (rhs1 * a22 - a12 * rhs2) * inv_det
        l_hyd = (a11 * rhs2 - a12 * rhs1) * inv_det
        D[0, j] = w0 * (d0x * l_dev + h0x * l_hyd)
        D[1, j] = w0 * (d0y * l_dev + h0y * l_hyd)
        D[2, j] = w0 * (d0z * l_dev + h0z * l_hyd)
        D[3, j] = w1 * (d1x * l_dev + h1x * l_hyd)
        D[4, j] = w1 * (d1y * l_dev + h1y * l_hyd)
        D[5, j] = w1 * (d1z * l_dev + h1z * l_hyd)
        D[6, j] = w2 * (d2x * l_dev + h2x * l_hyd)
        D[7, j] = w2 * (d2y * l_dev + h2y * l_hyd)
        D[8, j] = w2 * (d2z * l_dev + h2z * l_hyd)
        D[9, j] = w3 * (d3x * l_dev + h3x * l_hyd)
        D[10, j] = w3 * (d3y * l_dev + h3y * l_hyd)
        D[11, j] = w3 * (d3z * l_dev + h3z * l_hyd)


@nb.njit(inline="always", **FAST)
def sweep_chunks(x, corners, W, chunks, chunk_slots, first, last, B, alpha_dev, alpha_hyd, gamma, inv_dt2):
    """Gauss-Seidel over chunks [first, last) in order: gather edges, solve (whole padded blocks), scatter."""
    E = np.zeros((9, CHUNK))  # zeros: padding lanes read finite stale edges, never uninitialised memory
    D = np.empty((12, CHUNK))
    for c in range(first, last):
        # Offsets and vertex ids are never negative; masking the sign bit tells LLVM so. Without it numba's
        # negative-index wraparound hides that base + j is consecutive, and every per-tet load in solve_block
        # becomes a gather (measured: the sweep took ~30% longer). The results are the same.
        base = chunk_slots[c] & NON_NEGATIVE
        width = chunk_slots[c + 1] - base
        k = chunks[c + 1] - chunks[c]
        # Edges are taken while gathering (the same subtraction, so the same bits): 9 rows instead of 12.
        for j in range(k):
            i0 = corners[0, base + j] & NON_NEGATIVE
            x0, y0, z0 = x[i0, 0], x[i0, 1], x[i0, 2]
            for corner in range(1, 4):
                i = corners[corner, base + j] & NON_NEGATIVE
                E[3 * corner - 3, j] = x[i, 0] - x0
                E[3 * corner - 2, j] = x[i, 1] - y0
                E[3 * corner - 1, j] = x[i, 2] - z0
        # The padding lanes (k..width) solve inert columns (no mass, Dm^-1 = 0); their corrections are dropped.
        solve_block(E, W, B, alpha_dev, alpha_hyd, gamma, base, width, inv_dt2, D)
        for j in range(k):
            for corner in range(4):
                i = corners[corner, base + j] & NON_NEGATIVE
                x[i, 0] += D[3 * corner, j]
                x[i, 1] += D[3 * corner + 1, j]
                x[i, 2] += D[3 * corner + 2, j]


def _elastic_pass(x, corners, W, chunks, chunk_slots, slab_chunks, B, alpha_dev, alpha_hyd, gamma, inv_dt2):
    """One Gauss-Seidel sweep over all live tets: even slabs in parallel, then odd slabs in parallel.

    Per-tet data comes in the model's padded blocks (physics.model: block_*): corners (4, S) vertex ids, W (4, S)
    inverse masses, B (9, S) Dm^-1, compliances and gamma (S,); chunk c (chunks: its tets in the sweep order)
    occupies columns chunk_slots[c] to chunk_slots[c + 1]. The result does not depend on the thread count.
    """
    tasks = (slab_chunks.size - 1) // 2
    for phase in range(2):
        for p in nb.prange(tasks):
            first, last = slab_chunks[2 * p + phase], slab_chunks[2 * p + phase + 1]
            sweep_chunks(x, corners, W, chunks, chunk_slots, first, last, B, alpha_dev, alpha_hyd, gamma, inv_dt2)


def serial_twin(fn: types.FunctionType, name: str, **globals_: object) -> types.FunctionType:
    """A copy of ``fn`` under another name (its own numba cache entry) whose globals ``globals_`` override: the
    body of a parallel kernel, to be compiled without ``parallel`` (``prange`` is then ``range``)."""
    twin = types.FunctionType(fn.__code__, {**fn.__globals__, **globals_}, name, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = name
    twin.__doc__ = fn.__doc__
    return twin


elastic_pass = nb.njit(parallel=True, cache=True, **FAST)(_elastic_pass)
# The same sweep for a caller on one thread: a parallel kernel takes the GIL back at every prange launch
# (four a substep), so beside a busy Python thread each launch waits for the GIL. Same order, same result.
elastic_pass_serial = nb.njit(cache=True, **FAST)(serial_twin(_elastic_pass, "elastic_pass_serial"))
