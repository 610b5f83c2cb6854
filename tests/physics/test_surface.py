"""Boundary extraction, surface diffs, normals and connected pieces."""

import numpy as np
import pytest

from physics.procedural import tissue_block
from physics.surface import (
    TET_FACES,
    boundary_triangles,
    connected_components,
    graph_components,
    surface_after_removal,
    tet_neighbours,
    triangle_diff,
    triangle_normals,
)
from physics.voxels import label_volume_to_mesh


def _outward(mesh, tris, tets):
    """normal . (face centroid - centroid of the tet owning the face) for every triangle."""
    normals = triangle_normals(mesh.vertices, tris)
    face_c = mesh.vertices[tris].mean(axis=1)
    owners = [set(t) for t in tets.tolist()]
    dots = []
    for tri, n, c in zip(tris.tolist(), normals, face_c, strict=True):
        owner = next(t for t in owners if set(tri) <= t)
        tet_c = mesh.vertices[list(owner)].mean(axis=0)
        dots.append(n @ (c - tet_c))
    return np.array(dots)


def test_single_cube_has_twelve_outward_triangles():
    mesh, _ = label_volume_to_mesh(np.ones((1, 1, 1), dtype=int))
    tris = boundary_triangles(mesh.tets)
    assert tris.shape == (12, 3) and tris.dtype == np.int32
    assert np.all(_outward(mesh, tris, mesh.tets) > 0)
    normals = triangle_normals(mesh.vertices, tris)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1)
    # Every normal is an axis direction (faces of the cube, not the inner diagonal cuts).
    assert np.allclose(np.sort(np.abs(normals), axis=1), [0, 0, 1])


def test_boundary_is_deterministic_and_follows_alive():
    mesh = tissue_block(cells=(3, 2, 2))
    a = boundary_triangles(mesh.tets)
    perm = np.random.default_rng(0).permutation(mesh.n_tets)
    b = boundary_triangles(mesh.tets[perm])
    assert np.array_equal(a, b)
    alive = np.ones(mesh.n_tets, dtype=bool)
    alive[:6] = False  # remove one corner cube
    c = boundary_triangles(mesh.tets, alive)
    removed, added = triangle_diff(a, c)
    assert removed.shape[0] == 6  # its 3 outer squares
    assert added.shape[0] == 6  # the 3 inner squares it uncovers
    assert np.all(_outward(mesh, c, mesh.tets[alive]) > 0)
    assert boundary_triangles(mesh.tets, np.zeros(mesh.n_tets, dtype=bool)).shape == (0, 3)


def test_triangle_diff_ignores_orientation_and_finds_exact_changes():
    old = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    new = np.array([[3, 2, 1], [4, 5, 6], [4, 2, 3]])
    removed, added = triangle_diff(old, new)
    assert removed.tolist() == [[0, 1, 2]]
    assert added.tolist() == [[4, 5, 6]]
    removed, added = triangle_diff(old, old[::-1])
    assert removed.shape == (0, 3) and added.shape == (0, 3)
    removed, added = triangle_diff(np.zeros((0, 3), dtype=int), new)
    assert removed.shape == (0, 3) and added.tolist() == new.tolist()


def test_degenerate_triangle_normal_is_zero():
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]], dtype=float)
    n = triangle_normals(v, np.array([[0, 1, 2], [0, 1, 3]]))
    assert np.all(np.isfinite(n))
    assert np.allclose(n, [[0, 0, 0], [0, 0, 1]])


def test_removing_a_middle_slab_splits_a_block_in_two():
    mesh = tissue_block(size=(0.06, 0.02, 0.03), cells=(12, 4, 6))
    count, labels = connected_components(mesh.tets)
    assert count == 1 and np.all(labels == 0)
    x = mesh.vertices[mesh.tets].mean(axis=1)[:, 0]
    alive = np.abs(x) > 0.006  # drop the two cell layers around x = 0
    count, labels = connected_components(mesh.tets, alive)
    assert count == 2
    assert np.all(labels[~alive] == -1)
    assert np.all(labels[alive & (x < 0)] == 0) and np.all(labels[alive & (x > 0)] == 1)


def test_tets_sharing_only_a_vertex_are_connected():
    labels = np.zeros((2, 2, 2), dtype=int)
    labels[0, 0, 0] = labels[1, 1, 1] = 1
    mesh, _ = label_volume_to_mesh(labels)
    assert connected_components(mesh.tets)[0] == 1
    labels[1, 1, 1] = 0
    labels[1, 1, 0] = 1  # now shares an edge; and a third voxel far away in a bigger grid
    big = np.zeros((4, 2, 2), dtype=int)
    big[:2] = labels
    big[3, 0, 0] = 1
    mesh, _ = label_volume_to_mesh(big)
    assert connected_components(mesh.tets)[0] == 2


def test_graph_components_on_a_scrambled_long_chain():
    n = 50_000
    order = np.random.default_rng(1).permutation(n)
    count, labels = graph_components(n + 3, order[:-1], order[1:])
    assert count == 4  # the chain plus 3 isolated nodes
    assert np.all(labels[:n] == labels[0]) and len(set(labels[n:].tolist())) == 3


def test_connected_components_on_80k_tets():
    mesh = tissue_block(cells=(30, 15, 30))
    assert mesh.n_tets == 81_000
    count, _ = connected_components(mesh.tets)
    tris = boundary_triangles(mesh.tets)
    assert count == 1
    assert tris.shape[0] == 2 * 2 * (30 * 15 + 15 * 30 + 30 * 30)


def test_tet_neighbours_pair_up_shared_faces():
    mesh = tissue_block(size=(0.02, 0.01, 0.01), cells=(3, 2, 2))
    nb, nb_face = tet_neighbours(mesh.tets)
    inner = np.argwhere(nb >= 0)
    for t, f in inner:
        u, g = nb[t, f], nb_face[t, f]
        assert nb[u, g] == t and nb_face[u, g] == f
        assert set(mesh.tets[t, TET_FACES[f]]) == set(mesh.tets[u, TET_FACES[g]])
    # Boundary faces are exactly the surface.
    assert (nb < 0).sum() == boundary_triangles(mesh.tets).shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_after_removal_matches_full_extraction(seed):
    mesh = tissue_block(size=(0.02, 0.01, 0.01), cells=(4, 3, 3))
    nb, nb_face = tet_neighbours(mesh.tets)
    alive = np.ones(mesh.n_tets, dtype=bool)
    surface = boundary_triangles(mesh.tets, alive)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        doomed = rng.choice(np.flatnonzero(alive), size=max(1, int(alive.sum()) // 6), replace=False)
        before = surface
        alive[doomed] = False
        surface, left, joined = surface_after_removal(surface, mesh.tets, nb, nb_face, doomed, alive)
        np.testing.assert_array_equal(surface, boundary_triangles(mesh.tets, alive))
        gone, new = triangle_diff(before, surface)
        assert {tuple(sorted(t)) for t in gone} == {tuple(sorted(t)) for t in left}
        assert {tuple(sorted(t)) for t in new} == {tuple(sorted(t)) for t in joined}
