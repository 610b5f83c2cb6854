"""Procedural anatomy: valid, deterministic, single-piece meshes of the stated sizes."""

import numpy as np
import pytest

from physics.mesh import signed_volumes, validate
from physics.procedural import gallbladder, liver_lobe, tissue_block, vertices_in_box
from physics.surface import boundary_triangles, connected_components


def test_tissue_block_volume_position_and_counts():
    mesh = tissue_block(size=(0.06, 0.02, 0.03), cells=(12, 4, 6))
    assert mesh.n_tets == 12 * 4 * 6 * 6
    assert mesh.n_vertices == 13 * 5 * 7
    assert np.all(mesh.regions == 0)
    assert signed_volumes(mesh.vertices, mesh.tets).sum() == pytest.approx(0.06 * 0.02 * 0.03)
    assert np.allclose(mesh.vertices.min(axis=0), [-0.03, 0.0, -0.015])
    assert np.allclose(mesh.vertices.max(axis=0), [0.03, 0.02, 0.015])
    moved = tissue_block(size=(1.0, 2.0, 3.0), cells=(1, 1, 1), origin=(1.0, 1.0, 1.0))
    assert np.allclose(moved.vertices.min(axis=0), 1.0) and np.allclose(moved.vertices.max(axis=0), [2, 3, 4])


def test_tissue_block_builds_80k_tets():
    mesh = tissue_block(cells=(30, 15, 30))
    assert mesh.n_tets == 81_000


@pytest.mark.parametrize(("size", "cells"), [((0.1, 0, 0.1), (2, 2, 2)), ((0.1, 0.1, 0.1), (2, 0, 2))])
def test_tissue_block_rejects_bad_sizes(size, cells):
    with pytest.raises(ValueError):
        tissue_block(size=size, cells=cells)


def _check_organ(mesh):
    validate(mesh)
    vol = signed_volumes(mesh.vertices, mesh.tets)
    assert np.all(vol > 0)
    assert connected_components(mesh.tets)[0] == 1
    assert set(np.unique(mesh.regions).tolist()) == {0, 1}


def test_liver_lobe_is_valid_sized_and_smoothed():
    h = 0.006
    mesh = liver_lobe(h)
    _check_organ(mesh)
    extent = np.ptp(mesh.vertices, axis=0)
    assert 0.17 < extent[0] < 0.23 and 0.06 < extent[1] < 0.10 and 0.12 < extent[2] < 0.18
    assert abs(mesh.vertices[:, 1].min()) < 0.005  # rests on y = 0
    assert abs(mesh.vertices[:, 0].mean()) < 0.03 and abs(mesh.vertices[:, 2].mean()) < 0.01
    # Thick side at -x, thin edge at +x.
    v = mesh.vertices
    thick = np.ptp(v[v[:, 0] < -0.04, 1])
    thin = np.ptp(v[v[:, 0] > 0.07, 1])
    assert thick > 2.5 * thin
    # The surface was fitted: boundary vertices left the voxel grid (which interior vertices stay
    # on), each by at most 0.3 voxel.
    boundary = np.unique(boundary_triangles(mesh.tets))
    interior = np.setdiff1d(np.arange(mesh.n_vertices), boundary)
    grid = (v - v[interior[0]]) / h
    off_grid = np.abs(grid - np.round(grid))
    assert np.allclose(off_grid[interior], 0, atol=1e-9)
    assert off_grid[boundary].max() > 0.1
    assert np.linalg.norm(off_grid, axis=1).max() <= 0.3 + 1e-9
    # The vessel is a minority of the lobe and runs mostly through its inside (it enters at the hilum).
    vessel = np.bincount(mesh.regions)[1] / mesh.n_tets
    assert 0.003 < vessel < 0.1
    vessel_vertices = np.unique(mesh.tets[mesh.regions == 1])
    assert np.isin(vessel_vertices, boundary).mean() < 0.1


def test_gallbladder_is_valid_pear_with_thin_duct():
    mesh = gallbladder(0.004)
    _check_organ(mesh)
    v = mesh.vertices
    sac = v[np.unique(mesh.tets[mesh.regions == 0])]
    duct = v[np.unique(mesh.tets[mesh.regions == 1])]
    sac_extent = np.ptp(sac, axis=0)
    assert 0.07 < sac_extent[0] < 0.09
    assert 0.025 < sac_extent[1] < 0.035 and 0.025 < sac_extent[2] < 0.035
    assert 0.025 < np.ptp(duct[:, 0]) < 0.04
    assert np.ptp(duct[:, 1]) < 0.008 and np.ptp(duct[:, 2]) < 0.008
    assert duct[:, 0].max() < sac[:, 0].mean()  # the duct leaves the neck (-x), not the fundus
    # Pear: the fundus half is wider than the neck half.
    fundus = np.ptp(sac[sac[:, 0] > sac[:, 0].mean(), 1])
    neck = np.ptp(sac[sac[:, 0] < sac[:, 0].min() + 0.015, 1])
    assert fundus > 1.5 * neck


def test_generators_are_deterministic():
    a, b = gallbladder(0.005), gallbladder(0.005)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.tets, b.tets)
    assert np.array_equal(a.regions, b.regions)


@pytest.mark.parametrize("resolution", [0.004, 0.008])
def test_liver_lobe_other_resolutions_stay_valid(resolution):
    _check_organ(liver_lobe(resolution))


def test_gallbladder_coarse_resolution_keeps_the_duct():
    _check_organ(gallbladder(0.006))


def test_bad_resolution_raises():
    with pytest.raises(ValueError, match="resolution"):
        liver_lobe(0.0)
    with pytest.raises(ValueError, match="resolution"):
        gallbladder(1e-5)


def test_vertices_in_box_selects_a_ligament():
    mesh = tissue_block(size=(0.06, 0.02, 0.03), cells=(12, 4, 6))
    ids = vertices_in_box(mesh, (-0.031, -0.001, -1), (-0.029, 1, 1))  # the x = -0.03 end face
    assert ids.size == 5 * 7
    assert np.allclose(mesh.vertices[ids, 0], -0.03)
    others = np.setdiff1d(np.arange(mesh.n_vertices), ids)
    assert np.all(mesh.vertices[others, 0] > -0.029)
    assert vertices_in_box(mesh, (1, 1, 1), (2, 2, 2)).size == 0
    with pytest.raises(ValueError):
        vertices_in_box(mesh, (0, 0, 0), (-1, 1, 1))
