"""The implicit frame's coarse space: aggregates, the Galerkin coarse matrix against the reference Hessian,
the Cholesky factor and the coarse solve."""

import numpy as np
import pytest

from physics import coarse_space, fidelity
from physics.model import build_model
from physics.procedural import tissue_block
from physics.reference import Problem


def _column_model():
    mesh = tissue_block(size=(0.06, 0.02, 0.02), cells=(6, 2, 2), origin=(0.0, 0.0, 0.0))
    fixed = np.flatnonzero(mesh.vertices[:, 0] < 1e-9)
    end = np.flatnonzero(mesh.vertices[:, 0] > 0.06 - 1e-9)
    return build_model(mesh, [fidelity.material(1.0e5)], fixed=fixed, anchors=end, anchor_compliance=1e-4)


def test_aggregates_cover_the_movable_vertices_on_a_lattice():
    model = _column_model()
    movable = model.inv_mass > 0
    agg, n = coarse_space.aggregates(model.rest_positions, movable, 8)
    assert 4 <= n <= 16 and np.all(agg[~movable] == -1) and np.all(agg[movable] >= 0)
    assert set(np.unique(agg[movable])) == set(range(n))
    none, zero = coarse_space.aggregates(model.rest_positions, np.zeros(model.n_vertices, bool))
    assert zero == 0 and np.all(none == -1)


def test_the_coarse_matrix_is_the_galerkin_product_of_the_reference_hessian():
    model = _column_model()
    agg, n_agg = coarse_space.aggregates(model.rest_positions, model.inv_mass > 0, 8)
    live = np.flatnonzero(model.alive)
    tets = model.tets[live].astype(np.int64)
    k_dev, k_hyd = 1.0 / model.alpha_dev[live], 1.0 / model.alpha_hyd[live]
    x = 1.01 * model.rest_positions  # stretched: the det term's coefficient stays inside its limit
    inv_h2 = 3600.0
    A = coarse_space.coarse_matrix(
        x, tets, np.ascontiguousarray(model.dm_inv[live]), k_dev, k_hyd, model.gamma[live].copy(), agg, n_agg,
        model.mass, inv_h2, model.anchor_vertex.astype(np.int64), 1.0 / model.anchor_compliance,
    )  # fmt: skip
    problem = Problem(model)
    K = problem.hessian(x).toarray()  # free dofs, anchors included
    free = np.flatnonzero(problem.free)
    K += np.diag(np.repeat(model.mass[free] * inv_h2, 3))
    P = np.zeros((3 * free.size, 3 * n_agg))
    for k, i in enumerate(free):
        for d in range(3):
            P[3 * k + d, 3 * agg[i] + d] = 1.0
    expected = P.T @ K @ P
    np.testing.assert_allclose(A, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    L = coarse_space.cholesky(A)
    np.testing.assert_allclose(L @ L.T, A, rtol=1e-12, atol=1e-12 * np.abs(A).max())
    rhs = np.random.default_rng(1).normal(size=A.shape[0])
    y = np.empty_like(rhs)
    _solve(L, rhs, y)
    np.testing.assert_allclose(A @ y, rhs, rtol=1e-8, atol=1e-10)


def test_cholesky_refuses_a_matrix_that_is_not_positive_definite():
    with pytest.raises(ValueError):
        coarse_space.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


def _solve(L, rhs, y):
    import numba

    @numba.njit
    def run(L, rhs, y):
        coarse_space.solve_coarse(L, rhs, y)

    run(L, rhs, y)
