"""The stable Neo-Hookean solver against theory: beams, convergence, incompressibility, uniaxial stretch."""

import numpy as np
import pytest

from physics import Control, Environment, build_model, new_state, step
from physics.materials import Material
from physics.mesh import signed_volumes
from physics.procedural import tissue_block


def _tip_sag(length, height, cells, material, substeps, frames):
    mesh = tissue_block(size=(length, height, height), cells=cells, origin=(0.0, 0.0, 0.0))
    model = build_model(mesh, [material], fixed=np.flatnonzero(mesh.vertices[:, 0] < 1e-9))
    tip = np.flatnonzero(mesh.vertices[:, 0] > length - 1e-9)
    state = new_state(model)
    for _ in range(frames):
        step(model, state, Control(), substeps=substeps)
    assert np.abs(state.v).max() < 1e-3, "not settled"
    return float(-(state.x[tip, 1] - model.rest_positions[tip, 1]).mean())


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
    length, height, young, density = 0.1, 0.02, 1.0e6, 1000.0
    stiff = Material("stiff", young=young, poisson=0.3, density=density, damping=20.0)
    sag = _tip_sag(length, height, (20, 4, 4), stiff, substeps=200, frames=60)
    q = density * 9.81 * height * height
    theory = q * length**4 / (8.0 * young * height**4 / 12.0)
    assert sag == pytest.approx(theory, rel=0.10)


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
    mu, lam = material.lame
    gamma = 1.0 + mu / lam
    # Energy mu/2 tr(F^T F) + lam/2 (J - gamma)^2 with F = diag(s, t, t) and free sides (P22 = 0):
    t2 = (gamma - mu / (lam * s)) / s
    expected = (mu * s - mu * t2 / s) * side * side
    assert s > 1.05
    assert force == pytest.approx(expected, rel=0.05)
