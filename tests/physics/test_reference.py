"""The converged reference: derivatives of the discrete energy, Newton's convergence, and XPBD approaching it."""

import numba
import numpy as np
import pytest

from physics import Control, build_model, new_state, solver_threads, step
from physics.materials import Material
from physics.procedural import tissue_block
from physics.reference import Problem, Springs, solve_static

SOFT = Material("soft", young=8.0e3, poisson=0.45, density=1000.0, damping=20.0)


def _cantilever(material=SOFT, cells=(6, 2, 2), size=(0.06, 0.02, 0.02)):
    mesh = tissue_block(size=size, cells=cells, origin=(0.0, 0.0, 0.0))
    fixed = np.flatnonzero(mesh.vertices[:, 0] < 1e-9)
    tip = np.flatnonzero(mesh.vertices[:, 0] > size[0] - 1e-9)
    return build_model(mesh, [material], fixed=fixed), tip


def test_gradient_and_hessian_match_finite_differences():
    model, _ = _cantilever()
    rng = np.random.default_rng(1)
    springs = Springs(np.array([[5, 6, 7]]), np.array([[0.2, 0.3, 0.5]]), np.array([[0.01, 0.03, 0.0]]), 1e-3)
    problem = Problem(model, springs=springs)
    x = model.rest_positions + rng.normal(scale=1e-3, size=model.rest_positions.shape)
    g = problem.gradient(x)
    v = np.zeros_like(x)
    v[problem.free] = rng.normal(size=(int(problem.free.sum()), 3))
    h = 1e-7
    directional = (problem.energy(x + h * v) - problem.energy(x - h * v)) / (2 * h)
    assert (g * v).sum() == pytest.approx(directional, rel=1e-6)
    hv = problem.hessian(x) @ v.ravel()[problem.free_dof]
    fd = ((problem.gradient(x + h * v) - problem.gradient(x - h * v)) / (2 * h)).ravel()[problem.free_dof]
    assert np.abs(hv - fd).max() <= 1e-5 * np.abs(fd).max()
    assert np.all(g[~problem.free] == 0.0)


def test_projected_hessian_is_positive_semidefinite_far_from_rest():
    model, _ = _cantilever()
    rng = np.random.default_rng(2)
    x = model.rest_positions + rng.normal(scale=4e-3, size=model.rest_positions.shape)  # inverts some tets
    dense = Problem(model).hessian(x, project=True).toarray()
    assert np.allclose(dense, dense.T, atol=1e-9 * np.abs(dense).max())
    assert np.linalg.eigvalsh(dense).min() >= -1e-9 * np.abs(dense).max()


def test_newton_converges_quadratically_to_a_static_equilibrium():
    model, _ = _cantilever()
    eq = solve_static(Problem(model), model.rest_positions, tol=1e-12)
    assert eq.converged and eq.iterations <= 15  # a large (nonlinear) sag: 8 kPa under its own weight
    r = eq.residuals
    # Once in the quadratic regime each residual is at most ~ the square of the previous (relative to the first).
    rel = [v / r[0] for v in r]
    assert any(rel[i + 1] <= 10 * rel[i] ** 2 for i in range(1, len(rel) - 1) if rel[i] < 1e-2)
    # At the equilibrium the elastic forces carry the weight: the reaction on the pinned face is the total weight.
    g = Problem(model, gravity=(0.0, 0.0, 0.0)).gradient(eq.x)
    assert np.abs(g[model.inv_mass > 0] - model.mass[model.inv_mass > 0, None] * model.gravity).max() < 1e-9


def test_xpbd_approaches_the_converged_sag_as_substeps_grow():
    """XPBD's stiffness converges from below to the minimum of the same energy (soft tissue, small mesh)."""
    model, tip = _cantilever()
    ref = solve_static(Problem(model), model.rest_positions)
    sag_ref = -(ref.x[tip, 1] - model.rest_positions[tip, 1]).mean()

    def sag(substeps):
        m, _ = _cantilever()
        state = new_state(m)
        for _ in range(150):
            step(m, state, Control(), substeps=substeps)
        assert np.abs(state.v).max() < 1e-3
        return -(state.x[tip, 1] - m.rest_positions[tip, 1]).mean()

    before = numba.get_num_threads()
    solver_threads(1)  # a tiny mesh: parallel launches would only wait for each other
    try:
        coarse, fine = sag(5), sag(80)
    finally:
        numba.set_num_threads(before)
    assert sag_ref > 0.001
    assert coarse > fine > 0.99 * sag_ref  # softer, and less so with more substeps
    assert abs(fine - sag_ref) < 0.03 * sag_ref
