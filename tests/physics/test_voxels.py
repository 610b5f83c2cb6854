"""Voxel volumes to tet meshes: conformity, shared vertices, regions and input checks."""

import numpy as np
import pytest

from physics.mesh import MeshError, TetMesh, signed_volumes
from physics.surface import boundary_triangles
from physics.voxels import KUHN_TETS, label_volume_to_mesh


def test_kuhn_split_fills_the_unit_cube_positively():
    corners = KUHN_TETS.astype(float)
    e = corners[:, 1:] - corners[:, :1]
    vol = np.linalg.det(e) / 6
    assert np.allclose(vol, 1 / 6)
    # Every tet holds the main diagonal (000)-(111), so all cubes are cut the same way.
    assert all({(0, 0, 0), (1, 1, 1)} <= set(map(tuple, t)) for t in KUHN_TETS.tolist())
    assert len({frozenset(map(tuple, t)) for t in KUHN_TETS.tolist()}) == 6


def test_two_by_two_cube_shares_vertices_and_fills_volume():
    spacing = (0.001, 0.002, 0.003)
    mesh, values = label_volume_to_mesh(np.ones((2, 2, 2), dtype=np.int16), spacing, origin=(1.0, 2.0, 3.0))
    assert mesh.n_vertices == 27 and mesh.n_tets == 48
    assert np.unique(mesh.vertices, axis=0).shape[0] == 27
    vol = signed_volumes(mesh.vertices, mesh.tets)
    assert np.all(vol > 0)
    assert vol.sum() == pytest.approx(8 * np.prod(spacing))
    assert np.allclose(mesh.vertices.min(axis=0), [1.0, 2.0, 3.0])
    assert np.allclose(mesh.vertices.max(axis=0), [1.002, 2.004, 3.006])
    assert values.tolist() == [1]


def test_neighbouring_cubes_are_conforming():
    # A conforming mesh of a box has only outer faces on its boundary: 2 triangles per outer square.
    mesh, _ = label_volume_to_mesh(np.ones((3, 2, 4), dtype=np.int32))
    squares = 2 * (3 * 2 + 2 * 4 + 3 * 4)
    assert boundary_triangles(mesh.tets).shape[0] == 2 * squares


def test_two_labels_give_two_regions_and_unused_vertices_are_dropped():
    labels = np.zeros((4, 3, 3), dtype=np.int32)
    labels[0, 0, 0] = 7
    labels[1, 0, 0] = 7
    labels[2, 0, 0] = 3
    mesh, values = label_volume_to_mesh(labels, background=0)
    assert values.tolist() == [3, 7]
    assert np.bincount(mesh.regions).tolist() == [6, 12]
    assert mesh.n_vertices == 16  # a row of 3 cubes: 4 x 2 x 2 corners
    centroids = mesh.vertices[mesh.tets].mean(axis=1)
    assert np.all(centroids[mesh.regions == 0, 0] > 2)  # label 3 is the voxel at i = 2
    assert np.all(centroids[mesh.regions == 1, 0] < 2)


def test_non_zero_background_and_bool_mask():
    labels = np.full((2, 1, 1), 5)
    labels[1] = 9
    mesh, values = label_volume_to_mesh(labels, background=5)
    assert values.tolist() == [9] and mesh.n_tets == 6
    mesh, values = label_volume_to_mesh(np.array([[[True, False]]]))
    assert values.tolist() == [1] and mesh.n_tets == 6


@pytest.mark.parametrize(
    ("labels", "spacing", "match"),
    [
        (np.ones((2, 2)), (1, 1, 1), "3D"),
        (np.ones((2, 2, 2), dtype=float), (1, 1, 1), "integer"),
        (np.zeros((2, 2, 2), dtype=int), (1, 1, 1), "no voxel"),
    ],
)
def test_bad_label_volumes_raise_mesh_error(labels, spacing, match):
    with pytest.raises(MeshError, match=match):
        label_volume_to_mesh(labels, spacing)


@pytest.mark.parametrize("spacing", [(1, 0, 1), (1, -1, 1), (1, np.nan, 1), (1, 1)])
def test_bad_spacing_raises(spacing):
    with pytest.raises(ValueError, match="spacing"):
        label_volume_to_mesh(np.ones((1, 1, 1), dtype=int), spacing)


def test_tetmesh_rejects_nan_and_out_of_range_indices():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    t = np.array([[0, 1, 2, 3]])
    TetMesh(v, t, np.zeros(1))
    bad_v = v.copy()
    bad_v[2, 1] = np.nan
    with pytest.raises(MeshError, match="NaN"):
        TetMesh(bad_v, t, np.zeros(1))
    with pytest.raises(MeshError, match="indices"):
        TetMesh(v, np.array([[0, 1, 2, 4]]), np.zeros(1))
    with pytest.raises(MeshError, match="inverted"):
        TetMesh(v, np.array([[0, 2, 1, 3]]), np.zeros(1))
