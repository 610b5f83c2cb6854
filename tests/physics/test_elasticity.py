"""The stable Neo-Hookean solver against theory: beams, convergence, incompressibility, uniaxial stretch."""

import numpy as np
import pytest
from scipy.optimize import brentq

from physics import Control, Environment, build_model, new_state, step
from physics.materials import Material
from physics.mesh import signed_volumes
from physics.procedural import tissue_block
from physics.reference import Problem, solve_static


def _tip_sag(length, height, cells, material, substeps, frames):
    mesh = tissue_block(size=(length, height, height), cells=cells, origin=(0.0, 0.0, 0.0))
    model = build_model(mesh, [material], fixed=np.flatnonzero(mesh.vertices[:, 0] < 1e-9))
    tip = np.flatnonzero(mesh.vertices[:, 0] > length - 1e-9)
    state = new_state(model)
    for _ in range(frames):
        step(model, state, Control(), substeps=substeps)
    assert np.abs(state.v).max() < 1e-3, "not settled"
    return float(-(state.x[tip, 1] - model.rest_positions[tip, 1]).mean())


def _small_strain_moduli(material: Material, strain: float = 1e-5) -> tuple[float, float]:
    """Young's modulus and Poisson ratio of the model's discrete energy: stretch a block uniformly by `strain`
    along x, find the lateral strain at which the sides carry no load, read the end traction."""
    size = (0.02, 0.01, 0.01)
    mesh = tissue_block(size=size, cells=(4, 2, 2), origin=(0.0, 0.0, 0.0))
    model = build_model(mesh, [material], gravity=(0, 0, 0))
    problem = Problem(model)
    X = mesh.vertices
    end_x, end_y = np.isclose(X[:, 0], size[0]), np.isclose(X[:, 1], size[1])

    def face_loads(lateral):
        g = problem.gradient(X * np.array([1.0 + strain, 1.0 + lateral, 1.0 + lateral]))
        return g[end_x, 0].sum() / (size[1] * size[2]), g[end_y, 1].sum() / (size[0] * size[2])

    lateral = brentq(lambda t: face_loads(t)[1], -strain, strain, xtol=1e-18, rtol=1e-14)
    return face_loads(lateral)[0] / strain, -lateral / strain


@pytest.mark.parametrize("poisson", [0.0, 0.2, 0.3, 0.45, 0.49])
def test_small_strain_response_is_linear_elasticity_with_the_materials_e_and_nu(poisson):
    """The stable Neo-Hookean volume term needs lambda + mu (Smith et al. 2018): with Lame's lambda alone the
    block is 37% too soft at nu 0.2 and its Poisson ratio is wrong."""
    young = 3.0e4
    e_eff, nu_eff = _small_strain_moduli(Material("m", young=young, poisson=poisson, density=1000.0))
    assert e_eff == pytest.approx(young, rel=1e-3)
    assert nu_eff == pytest.approx(poisson, abs=1e-3)


def test_rest_shape_is_an_equilibrium_without_gravity():
    """The coupled deviatoric/hydrostatic solve leaves an undeformed body exactly where it is."""
    mesh = tissue_block(size=(0.03, 0.01, 0.02), cells=(6, 2, 4))
    model = build_model(mesh, [Material("m", young=5e4, poisson=0.45, density=1000)], gravity=(0, 0, 0))
    state = new_state(model)
    for _ in range(10):
        step(model, state, Control(), substeps=20)
    assert np.abs(state.x - mesh.vertices).max() < 1e-12


@pytest.mark.slow
def test_stiff_cantilever_sags_as_euler_bernoulli_predicts():
    """At 200 substeps the solver lands within 5% of the converged sag of its own energy on the same mesh; that
    converges to Euler-Bernoulli as the mesh is refined (linear tets lock in bending: 4 cells through the
    thickness are ~19% too stiff, 8 cells ~4%)."""
    length, height, young, density = 0.1, 0.02, 1.0e6, 1000.0
    stiff = Material("stiff", young=young, poisson=0.3, density=density, damping=20.0)
    sag = _tip_sag(length, height, (20, 4, 4), stiff, substeps=200, frames=60)
    q = density * 9.81 * height * height
    theory = q * length**4 / (8.0 * young * height**4 / 12.0)
    coarse, fine = _converged_sag(length, height, (20, 4, 4), stiff), _converged_sag(length, height, (40, 8, 8), stiff)
    assert sag == pytest.approx(coarse, rel=0.05)
    assert coarse < fine < theory
    assert fine == pytest.approx(theory, rel=0.06)


def _converged_sag(length, height, cells, material):
    mesh = tissue_block(size=(length, height, height), cells=cells, origin=(0.0, 0.0, 0.0))
    model = build_model(mesh, [material], fixed=np.flatnonzero(mesh.vertices[:, 0] < 1e-9))
    tip = np.flatnonzero(mesh.vertices[:, 0] > length - 1e-9)
    eq = solve_static(Problem(model), model.rest_positions)
    assert eq.converged
    return float(-(eq.x[tip, 1] - model.rest_positions[tip, 1]).mean())


def test_soft_sag_converges_as_substeps_grow():
    """A soft bridge (both ends fixed) sags; 40 substeps land within 2% of a 200-substep reference."""
    mesh = tissue_block(size=(0.06, 0.02, 0.02), cells=(12, 4, 4), origin=(0.0, 0.0, 0.0))
    x0 = mesh.vertices[:, 0]
    ends = np.flatnonzero((x0 < 1e-9) | (x0 > 0.06 - 1e-9))
    middle = np.flatnonzero(np.isclose(x0, 0.03))
    soft = Material("soft", young=5.0e3, poisson=0.45, density=1000.0, damping=20.0)

    def sag(substeps):
        model = build_model(mesh, [soft], fixed=ends)
        state = new_state(model)
        for _ in range(60):
            step(model, state, Control(), substeps=substeps)
        return float(-(state.x[middle, 1] - mesh.vertices[middle, 1]).mean())

    reference, sag40, sag10 = sag(200), sag(40), sag(10)
    assert reference > 0.001
    assert abs(sag40 - reference) <= 0.02 * reference
    # Fewer substeps are softer (XPBD's stiffness converges from below), never stiffer.
    assert sag10 - reference > sag40 - reference > -0.001 * reference


def test_nearly_incompressible_block_keeps_its_volume_under_load():
    mesh = tissue_block(size=(0.04, 0.02, 0.04), cells=(8, 4, 8))
    rubbery = Material("rubbery", young=1.0e4, poisson=0.49, density=1000.0, damping=10.0)
    model = build_model(mesh, [rubbery], environment=Environment.table(0.0), gravity=(0.0, -9.81 * 3, 0.0))
    state = new_state(model)
    v0 = signed_volumes(mesh.vertices, mesh.tets).sum()
    for _ in range(40):
        step(model, state, Control(), substeps=40)
    vols = signed_volumes(state.x, mesh.tets)
    sag = mesh.vertices[:, 1].max() - state.x[:, 1].max()
    assert sag > 0.0003, "the load should visibly squash the block"
    assert abs(vols.sum() - v0) / v0 < 0.005
    assert vols.min() > 0.0


def test_uniaxial_stretch_force_matches_neo_hookean():
    """Pull a bar 10% longer; the end reaction equals P11 * A of the model at the mid-bar stretch.

    The mid-bar stretch is used because clamped ends stiffen the bar near them (Saint-Venant).
    """
    length, side = 0.05, 0.01
    mesh = tissue_block(size=(length, side, side), cells=(15, 3, 3), origin=(0.0, 0.0, 0.0))
    material = Material("t", young=1.0e4, poisson=0.3, density=1000.0, damping=20.0)
    x0 = mesh.vertices[:, 0]
    left, right = np.flatnonzero(x0 < 1e-9), np.flatnonzero(x0 > length - 1e-9)
    model = build_model(mesh, [material], anchors=np.r_[left, right], anchor_compliance=1e-8, gravity=(0, 0, 0))
    pulled = np.isin(model.anchor_vertex, right)
    model.anchor_position[pulled, 0] += 0.1 * length
    state = new_state(model)
    for _ in range(240):
        report = step(model, state, Control(), substeps=40)
    force = report.anchor_forces[pulled, 0].sum()
    a, b = np.isclose(x0, length / 3), np.isclose(x0, 2 * length / 3)
    s = (state.x[b, 0].mean() - state.x[a, 0].mean()) / (length / 3)
    mu, lame_lambda = material.lame
    lam = lame_lambda + mu  # the stable Neo-Hookean volume stiffness (Smith et al. 2018)
    gamma = 1.0 + mu / lam
    # Energy mu/2 tr(F^T F) + lam/2 (J - gamma)^2 with F = diag(s, t, t) and free sides (P22 = 0):
    t2 = (gamma - mu / (lam * s)) / s
    expected = (mu * s - mu * t2 / s) * side * side
    assert s > 1.05
    assert force == pytest.approx(expected, rel=0.05)
