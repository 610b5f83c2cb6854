"""The converged reference: a Newton solve of the engine's own discrete energy to static equilibrium.

The real-time solver (XPBD small steps, one iteration each) only approaches the minimum of its energy as
substeps grow; this module finds that minimum directly, so the benchmark and the tests can say how close a
real-time frame gets (stiffness, volume, forces) on the same mesh. Energy, with the model's per-tet constants
(physics.model: alpha_dev = 1/(mu V), alpha_hyd = 1/(lambda_hat V), gamma = 1 + mu/lambda_hat):

    sum_t |F_t|^2 / (2 alpha_dev_t) + (det F_t - gamma_t)^2 / (2 alpha_hyd_t)
    - sum_i m_i g . x_i + sum_springs |sum_k w_k x_k - target|^2 / (2 compliance)

over the movable vertices (inv_mass > 0; pinned and orphaned vertices stay where they are). Springs are the
anchors (ligaments) and grasp points, with the compliances the solver uses. Instrument and environment contact
are not part of it. Newton with the per-tet Hessian projected to positive semi-definite (in F space), a sparse
direct solve (scipy's SuperLU) and a backtracking line search on the energy. numpy and scipy only: slow, exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physics.model import Model


@dataclass
class Springs:
    """Zero-length springs from barycentric points (vertex triples, weights) to fixed targets (compliance m/N)."""

    vertices: np.ndarray  # (k, 3) int
    weights: np.ndarray  # (k, 3)
    targets: np.ndarray  # (k, 3)
    compliance: float

    @staticmethod
    def empty() -> Springs:
        return Springs(np.zeros((0, 3), np.int64), np.zeros((0, 3)), np.zeros((0, 3)), 1.0)

    def points(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("kj,kjd->kd", self.weights, x[self.vertices])

    def forces(self, x: np.ndarray) -> np.ndarray:
        """(k, 3) N each spring pulls on the tissue at positions x."""
        return (self.targets - self.points(x)) / self.compliance


def anchor_springs(model: Model) -> Springs:
    """The model's anchors as springs (vertex, vertex, vertex) with weights (1, 0, 0)."""
    v = np.repeat(model.anchor_vertex[:, None].astype(np.int64), 3, axis=1)
    w = np.zeros((v.shape[0], 3))
    w[:, 0] = 1.0
    return Springs(v, w, model.anchor_position.copy(), model.anchor_compliance)


@dataclass
class Equilibrium:
    """A converged static state: positions, Newton iterations, the residual history (max |gradient|, N)."""

    x: np.ndarray
    iterations: int
    residuals: list[float] = field(default_factory=list)
    converged: bool = False


def _full_b(model: Model, tets: np.ndarray) -> np.ndarray:
    """(m, 4, 3): dF column c / d x_a = Bfull[a, c] (rows: corner 0 = -sum of the others, then Dm^-1 rows)."""
    B = model.dm_inv[tets].reshape(-1, 3, 3)
    return np.concatenate([-B.sum(axis=1, keepdims=True), B], axis=1)


def deformation(model: Model, x: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """(m, 3, 3) F of the given tets, indexed F[t, column c, component d] (columns f_c = sum_a Bfull[a, c] x_a)."""
    return np.einsum("tac,tad->tcd", _full_b(model, tets), x[model.tets[tets]])


def _cofactor(F: np.ndarray) -> np.ndarray:
    """d det F / d f_c as columns (same indexing as F): f1 x f2, f2 x f0, f0 x f1."""
    f0, f1, f2 = F[:, 0], F[:, 1], F[:, 2]
    return np.stack([np.cross(f1, f2), np.cross(f2, f0), np.cross(f0, f1)], axis=1)


class Problem:
    """The energy of one model at one load: its value, gradient and Hessian over the movable vertices."""

    def __init__(
        self, model: Model, alpha_dev: np.ndarray | None = None, springs: Springs | None = None, gravity=None
    ) -> None:
        self.model = model
        self.live = np.flatnonzero(model.alive)
        self.tets = model.tets[self.live].astype(np.int64)
        self.bfull = _full_b(model, self.live)
        ad = model.alpha_dev if alpha_dev is None else np.asarray(alpha_dev)
        self.k_dev = 1.0 / ad[self.live]
        self.k_hyd = 1.0 / model.alpha_hyd[self.live]
        self.gamma = model.gamma[self.live]
        self.springs = [s for s in (anchor_springs(model), springs or Springs.empty()) if s.vertices.shape[0]]
        g = model.gravity if gravity is None else np.asarray(gravity, dtype=np.float64)
        self.weight = model.mass[:, None] * g[None, :]  # N, gravity's force per vertex
        self.free = model.inv_mass > 0.0
        n = model.n_vertices
        dof = np.arange(3 * n).reshape(n, 3)
        self.free_dof = dof[self.free].ravel()
        corner_dof = dof[self.tets]  # (m, 4, 3)
        flat = corner_dof.reshape(-1, 12)
        self._rows = np.repeat(flat, 12, axis=1).ravel()
        self._cols = np.tile(flat, (1, 12)).ravel()
        self.n = n

    def _f(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("tac,tad->tcd", self.bfull, x[self.tets])

    def energy(self, x: np.ndarray) -> float:
        F = self._f(x)
        J = np.linalg.det(np.transpose(F, (0, 2, 1)))
        e = 0.5 * self.k_dev * (F * F).sum(axis=(1, 2)) + 0.5 * self.k_hyd * (J - self.gamma) ** 2
        total = float(e.sum()) - float((self.weight * x).sum())
        for s in self.springs:
            d = s.points(x) - s.targets
            total += 0.5 * float((d * d).sum()) / s.compliance
        return total

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) dE/dx (zero rows for vertices that do not move)."""
        F = self._f(x)
        C = _cofactor(F)
        J = (F[:, 0] * C[:, 0]).sum(axis=1)
        P = self.k_dev[:, None, None] * F + (self.k_hyd * (J - self.gamma))[:, None, None] * C
        per_corner = np.einsum("tac,tcd->tad", self.bfull, P)
        g = np.zeros((self.n, 3))
        np.add.at(g, self.tets.ravel(), per_corner.reshape(-1, 3))
        g -= self.weight
        for s in self.springs:
            f = -s.forces(x)
            for j in range(3):
                np.add.at(g, s.vertices[:, j], s.weights[:, j, None] * f)
        g[~self.free] = 0.0
        return g

    def hessian(self, x: np.ndarray, project: bool = False) -> sp.csc_matrix:
        """The Hessian restricted to the free degrees of freedom; with project, each tet's part projected to PSD
        (in F space: the det term makes a tet's own Hessian indefinite even where the sum is positive)."""
        F = self._f(x)
        C = _cofactor(F)
        J = (F[:, 0] * C[:, 0]).sum(axis=1)
        m = F.shape[0]
        c = C.reshape(m, 9)
        H = (self.k_hyd[:, None, None] * c[:, :, None] * c[:, None, :]).reshape(m, 3, 3, 3, 3)
        s = self.k_hyd * (J - self.gamma)
        # Hessian of det: block (c, c') = d(cof_c)/d f_c' = [[0, -[f2], [f1]], [[f2], 0, -[f0]], [-[f1], [f0], 0]].
        for a, b, k, sign in ((0, 1, 2, -1.0), (0, 2, 1, 1.0), (1, 2, 0, -1.0)):
            cross = _skew(F[:, k]) * (sign * s)[:, None, None]
            H[:, a, :, b, :] += cross
            H[:, b, :, a, :] -= cross  # the transpose of a skew block is its negative
        H = H.reshape(m, 9, 9) + self.k_dev[:, None, None] * np.eye(9)[None]
        if project:
            w, V = np.linalg.eigh(H)
            H = np.einsum("tij,tj,tkj->tik", V, np.maximum(w, 0.0), V)
        H = H.reshape(m, 3, 3, 3, 3)
        H12 = np.einsum("tac,tcdke,tbk->tadbe", self.bfull, H, self.bfull)
        n3 = 3 * self.n
        K = sp.coo_matrix((H12.ravel(), (self._rows, self._cols)), shape=(n3, n3))
        for spring in self.springs:
            K = K + _spring_hessian(spring, n3)
        K = K.tocsr()[self.free_dof][:, self.free_dof]
        return K.tocsc()


def _skew(v: np.ndarray) -> np.ndarray:
    """(m, 3, 3) cross-product matrices [v] with [v] u = v x u."""
    z = np.zeros(v.shape[0])
    return np.stack(
        [np.stack([z, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], z, -v[:, 0]], 1), np.stack([-v[:, 1], v[:, 0], z], 1)],
        axis=1,
    )


def _spring_hessian(s: Springs, n3: int) -> sp.coo_matrix:
    k = s.vertices.shape[0]
    rows, cols, vals = [], [], []
    for i in range(3):
        for j in range(3):
            for d in range(3):
                rows.append(3 * s.vertices[:, i] + d)
                cols.append(3 * s.vertices[:, j] + d)
                vals.append(s.weights[:, i] * s.weights[:, j] / s.compliance)
    if k == 0:
        return sp.coo_matrix((n3, n3))
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n3, n3))


def solve_static(
    problem: Problem, x0: np.ndarray, tol: float = 1e-9, max_iterations: int = 60, xtol: float = 1e-13
) -> Equilibrium:
    """Newton from x0 to static equilibrium: stops when max |gradient| <= tol x the load scale (N) or a step
    moves no vertex more than xtol (m). The load scale is the largest of the vertex weights and the first
    residual, so tol is relative."""
    x = np.array(x0, dtype=np.float64, copy=True)
    free = problem.free_dof
    g = problem.gradient(x)
    scale = max(float(np.abs(problem.weight).max(initial=0.0)), float(np.abs(g).max()), 1e-12)
    residuals = [float(np.abs(g).max())]
    e = problem.energy(x)
    for it in range(1, max_iterations + 1):
        if residuals[-1] <= tol * scale:
            return Equilibrium(x, it - 1, residuals, True)
        # The exact Hessian first (quadratic convergence); the PSD-projected one where that is no descent.
        for project in (False, True):
            dx = _newton_direction(problem.hessian(x, project), g.ravel()[free], 3 * problem.n, free)
            slope = float((g.ravel() * dx).sum())
            if slope < 0.0 and np.all(np.isfinite(dx)):
                break
        step = dx.reshape(-1, 3)
        t = 1.0
        while True:
            trial = x + t * step
            e_trial = problem.energy(trial)
            g_trial = problem.gradient(trial)
            if e_trial <= e + 1e-4 * t * slope or t < 1e-8:
                break
            # Near the minimum the energy's change drops below its round-off: then a step that lowers the
            # residual is taken as it is.
            if abs(e_trial - e) <= 1e-12 * abs(e) and np.abs(g_trial).max() < residuals[-1]:
                break
            t *= 0.5
        x, e, g = trial, e_trial, g_trial
        residuals.append(float(np.abs(g).max()))
        if t * float(np.abs(step).max()) <= xtol:
            return Equilibrium(x, it, residuals, residuals[-1] <= 1e3 * tol * scale)
    return Equilibrium(x, max_iterations, residuals, residuals[-1] <= tol * scale)


def _newton_direction(K: sp.csc_matrix, g_free: np.ndarray, n3: int, free: np.ndarray) -> np.ndarray:
    """-K^-1 g on the free degrees of freedom (zeros elsewhere); NaN where K is singular."""
    K = K + sp.identity(K.shape[0], format="csc") * (1e-12 * float(np.abs(K.diagonal()).max(initial=1.0)))
    dx = np.zeros(n3)
    try:
        lu = spla.splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    except RuntimeError:  # exactly singular
        dx[free] = np.nan
        return dx
    dx[free] = -lu.solve(g_free)
    return dx
