"""poses.rotate: the one-vector fast path gives the bits of the numpy formula (np.cross) it stands in for."""

from __future__ import annotations

import numpy as np

from netcode.protocol.poses import quat_normalize, rotate


def _numpy_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    q = quat_normalize(q)
    u, w = q[:3], q[3]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def test_rotating_one_vector_matches_the_numpy_formula_bit_for_bit():
    rng = np.random.default_rng(5)
    for _ in range(2000):
        q = rng.normal(size=4) * rng.choice([1e-3, 1.0, 1e3])
        v = rng.normal(size=3) * rng.choice([1e-6, 1.0, 1e6])
        assert rotate(q, v).tobytes() == _numpy_rotate(q, v).tobytes()
    assert rotate(np.zeros(4), [0.0, 0.0, 1.0]).tolist() == [0.0, 0.0, 1.0]  # a zero quaternion: the identity


def test_rotating_many_vectors_rotates_each_row():
    rng = np.random.default_rng(6)
    q, vs = rng.normal(size=4), rng.normal(size=(5, 3))
    rows = rotate(q, vs)
    assert rows.shape == (5, 3)
    for row, v in zip(rows, vs, strict=True):
        assert np.allclose(row, rotate(q, v), rtol=0, atol=1e-12)
    assert np.allclose(np.linalg.norm(rows, axis=1), np.linalg.norm(vs, axis=1))
