"""The compiled mesh distance: exact against a box's analytic signed distance, either winding order."""

import numpy as np
import pytest

from netcode.protocol.mesh_distance import mesh_signed_distance
from tests.netcode.protocol.test_fixture_shapes import box_mesh


def box_sdf(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """The exact signed distance to an axis-aligned box."""
    c, h = (lo + hi) / 2, (hi - lo) / 2
    q = np.abs(p - c) - h
    return float(np.linalg.norm(np.maximum(q, 0.0)) + min(q.max(), 0.0))


@pytest.mark.parametrize("flip", [False, True], ids=["outward", "inward"])
def test_the_distance_to_a_box_mesh_is_the_box_signed_distance(flip):
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([0.02, 0.01, 0.03])
    mesh = box_mesh(lo, hi, margin=0.001)
    triangles = mesh.triangles[:, ::-1].copy() if flip else mesh.triangles
    centroid = mesh.vertices.mean(axis=0)
    rng = np.random.default_rng(7)
    for p in rng.uniform(-0.02, 0.05, size=(300, 3)):
        d, normal = mesh_signed_distance(mesh.vertices, triangles, centroid, 0.001, p)
        assert d == pytest.approx(box_sdf(p, lo, hi) - 0.001, abs=1e-12)
        assert np.linalg.norm(normal) == pytest.approx(1.0)
        step = 1e-6 * normal  # the normal points up the distance field
        assert mesh_signed_distance(mesh.vertices, triangles, centroid, 0.001, p + step)[0] > d


def test_a_point_on_the_surface_gets_the_face_normal_away_from_the_centroid():
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([0.01, 0.01, 0.01])
    mesh = box_mesh(lo, hi)
    d, normal = mesh_signed_distance(
        mesh.vertices, mesh.triangles, mesh.vertices.mean(axis=0), 0.0, np.array([0.004, 0.003, 0.01])
    )
    assert d == 0.0 and np.allclose(normal, [0, 0, 1])
