"""Fixture shapes: signed distances, first contact along fast motions, closest points of guides."""

import numpy as np
import pytest

from netcode.protocol.fixture_shapes import (
    Capsule,
    Plane,
    Polyline,
    Sphere,
    TriangleMesh,
    boundary_point,
    deviation,
    first_contact,
    inside,
)


def box_mesh(lo, hi, margin=0.0) -> TriangleMesh:
    """A closed box of 12 triangles."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]] for i in range(8)])
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    tris = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return TriangleMesh(v, np.array(tris), margin)


def test_signed_distances_and_normals():
    d, n = Sphere((0, 0, 0), 0.01).distance(np.array([0.02, 0, 0]))
    assert d == pytest.approx(0.01) and np.allclose(n, [1, 0, 0])
    d, n = Capsule((0, 0, 0), (0.1, 0, 0), 0.005).distance(np.array([0.05, -0.001, 0]))
    assert d == pytest.approx(-0.004) and np.allclose(n, [0, -1, 0])
    box = box_mesh([0, 0, 0], [0.01, 0.01, 0.01], margin=0.001)
    d, n = box.distance(np.array([0.005, 0.005, 0.009]))
    assert d == pytest.approx(-0.002) and np.allclose(n, [0, 0, 1])
    d, n = box.distance(np.array([0.005, 0.005, 0.013]))
    assert d == pytest.approx(0.002) and np.allclose(n, [0, 0, 1])
    d, _ = box.distance(np.array([0.013, 0.014, 0.005]))  # nearest an edge
    assert d == pytest.approx(0.005 - 0.001)


@pytest.mark.parametrize(
    "region",
    [
        Sphere((0.0, 0.0, 0.0), 0.002),
        Capsule((0.0, 0.0, -0.05), (0.0, 0.0, 0.05), 0.0015),
        box_mesh([-0.001, -0.05, -0.05], [0.001, 0.05, 0.05]),  # a 2 mm thin wall
    ],
    ids=["sphere", "capsule", "thin_mesh"],
)
def test_a_3_m_s_motion_through_a_thin_region_is_caught(region):
    """At 3 m/s and 60 Hz a tip moves 50 mm a tick, 25 times the region's thickness: the first contact is found."""
    p0, p1 = np.array([-0.025, 0.0, 0.0]), np.array([0.025, 0.0, 0.0])
    t = first_contact(region, p0, p1)
    assert t is not None
    contact = p0 + t * (p1 - p0)
    assert contact[0] < 0 and abs(region.distance(contact)[0]) < 2e-5
    assert first_contact(region, np.array([-0.025, 0.06, 0.0]), np.array([0.025, 0.06, 0.0])) is None
    assert inside(region, np.zeros(3)) and not inside(region, p1)
    out = boundary_point(region, np.array([0.0003, 0.0, 0.0]))
    assert not inside(region, out) and region.distance(out)[0] < 1e-4


def test_guides_measure_deviation():
    assert deviation(Plane((0, 0.01, 0), (0, 2, 0)), np.array([0.3, 0.015, -1])) == pytest.approx(0.005)
    path = Polyline(np.array([[0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0]]))
    assert deviation(path, np.array([0.05, 0.003, 0])) == pytest.approx(0.003)
    assert deviation(path, np.array([0.104, 0.05, 0])) == pytest.approx(0.004)
    with pytest.raises(ValueError):
        Polyline(np.array([[0, 0, 0]]))
