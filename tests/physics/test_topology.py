"""split_along_faces: opening a model along chosen faces (the scissors' incision), on a small block."""

import numpy as np
import pytest

from physics.model import add_anchors
from physics.surface import boundary_triangles, connected_components, tet_neighbours
from physics.topology import VertexCapError, split_along_faces
from tests.physics.scenes import block


def _plane_faces(model, x0: float, z_max: float = np.inf) -> np.ndarray:
    """(tet, face) pairs of the interior faces lying in the plane x = x0 (with centre z below z_max)."""
    centres = model.rest_positions[model.tets].mean(axis=1)
    rows = []
    for t in range(model.n_tets):
        for f in range(4):
            u = model.neighbour[t, f]
            if u > t and (centres[t, 0] - x0) * (centres[u, 0] - x0) < 0 and centres[t, 2] < z_max:
                rows.append((t, f))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _consistent(model, state) -> None:
    np.testing.assert_array_equal(model.surface, boundary_triangles(model.tets, model.alive))
    neighbour, face = tet_neighbours(model.tets)
    np.testing.assert_array_equal(model.neighbour, neighbour)
    np.testing.assert_array_equal(model.neighbour_face, face)
    assert model.n_vertices == state.x.shape[0] == state.v.shape[0] == model.fixed.shape[0] == model.mass.shape[0]


def test_a_full_plane_of_faces_splits_the_block_in_two():
    model, state = block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2))
    n0, surface0 = model.n_vertices, model.surface.copy()
    faces = _plane_faces(model, 0.0)
    split = split_along_faces(model, state, faces)
    assert connected_components(model.tets, model.alive)[0] == 2
    # Every vertex of the plane x = 0 got one copy; the copies are appended after the old vertices.
    on_plane = np.flatnonzero(np.abs(model.rest_positions[:n0, 0]) < 1e-12)
    np.testing.assert_array_equal(np.sort(split.sources), on_plane)
    assert split.first_new == n0 and model.n_vertices == n0 + on_plane.size
    np.testing.assert_array_equal(model.wound_pairs[:, 1], np.arange(n0, model.n_vertices))
    assert model.epoch == 1 and split.faces.shape[0] == faces.shape[0]
    _consistent(model, state)
    # The triangle diff takes the old surface to the new one.
    keys = {tuple(sorted(t)) for t in surface0.tolist()}
    keys -= {tuple(sorted(t)) for t in split.removed_triangles.tolist()}
    keys |= {tuple(sorted(t)) for t in split.added_triangles.tolist()}
    assert keys == {tuple(sorted(t)) for t in model.surface.tolist()}


def test_a_partial_incision_opens_but_keeps_the_block_whole():
    model, state = block(size=(0.02, 0.01, 0.02), cells=(4, 2, 4))
    split = split_along_faces(model, state, _plane_faces(model, 0.0, z_max=0.0))  # half-way across
    assert split.sources.size > 0
    assert connected_components(model.tets, model.alive)[0] == 1  # joined beyond the incision's tip
    _consistent(model, state)


def test_an_enclosed_face_does_not_open_and_changes_nothing():
    model, state = block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2))
    t = int(np.flatnonzero((model.neighbour >= 0).all(axis=1))[0])  # a tet with four interior faces
    before = (model.tets.copy(), model.surface.copy(), model.n_vertices)
    split = split_along_faces(model, state, np.array([[t, 0]]))
    assert split.sources.size == 0 and split.faces.shape[0] == 0 and model.epoch == 0
    np.testing.assert_array_equal(model.tets, before[0])
    np.testing.assert_array_equal(model.surface, before[1])
    assert model.n_vertices == before[2]


def test_boundary_and_repeated_faces_are_ignored_and_bad_ids_refused():
    model, state = block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2))
    boundary = np.argwhere(model.neighbour < 0)[:5]
    assert split_along_faces(model, state, boundary).sources.size == 0
    faces = _plane_faces(model, 0.0)
    twice = np.concatenate([faces, faces])
    assert split_along_faces(model, state, twice).faces.shape[0] == faces.shape[0]
    for bad in ([[model.n_tets, 0]], [[0, 4]], [[-1, 0]]):
        with pytest.raises(ValueError):
            split_along_faces(model, state, np.array(bad))


def test_copies_keep_pinning_and_anchors_and_the_cap_refuses_growth():
    model, state = block(size=(0.02, 0.01, 0.01), cells=(4, 2, 2), pinned_bottom=True)
    plane = np.flatnonzero(np.abs(model.rest_positions[:, 0]) < 1e-12)
    top = plane[model.rest_positions[plane, 1] > 0.009]
    add_anchors(model, top, model.rest_positions[top] + 0.001)
    faces = _plane_faces(model, 0.0)
    model.vertex_cap = model.n_vertices + plane.size - 1
    with pytest.raises(VertexCapError, match="cap"):
        split_along_faces(model, state, faces)
    assert model.epoch == 0 and model.n_vertices == model.vertex_cap - plane.size + 1
    model.vertex_cap += 1
    split = split_along_faces(model, state, faces)
    copies = np.arange(split.first_new, model.n_vertices)
    np.testing.assert_array_equal(model.fixed[copies], model.fixed[split.sources])
    assert model.fixed[copies].any() and np.all(model.inv_mass[model.fixed] == 0)
    anchored = np.isin(split.sources, top)
    np.testing.assert_array_equal(np.sort(model.anchor_vertex[-anchored.sum() :]), np.sort(copies[anchored]))
    rows = {int(v): i for i, v in enumerate(model.anchor_vertex)}
    for src, copy in zip(split.sources[anchored], copies[anchored], strict=True):
        np.testing.assert_array_equal(model.anchor_position[rows[int(copy)]], model.anchor_position[rows[int(src)]])
