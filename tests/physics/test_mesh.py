"""physics/mesh.py: the inverted-tet count against the signed volumes it stands for."""

import numpy as np

from physics.mesh import count_inverted, signed_volumes
from physics.procedural import tissue_block


def test_count_inverted_counts_the_live_tets_whose_signed_volume_is_not_positive():
    mesh = tissue_block(size=(0.03, 0.01, 0.02), cells=(6, 2, 4))
    x = mesh.vertices + np.random.default_rng(3).normal(0.0, 0.002, mesh.vertices.shape)  # jitter inverts some
    alive = np.ones(mesh.tets.shape[0], dtype=bool)
    alive[::5] = False
    expected = int(np.count_nonzero(signed_volumes(x, mesh.tets[alive]) <= 0.0))
    assert 0 < expected < alive.sum()
    assert count_inverted(x, mesh.tets, alive) == expected
    assert count_inverted(mesh.vertices, mesh.tets, alive) == 0  # the rest shape is positively oriented
    flat = mesh.vertices.copy()
    flat[:, 1] = 0.0  # every tet squashed to zero volume counts
    assert count_inverted(flat, mesh.tets, alive) == alive.sum()
