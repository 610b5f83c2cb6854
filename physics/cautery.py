"""Cautery: an energized tip heats nearby tissue; damage stiffens it and, at 1, burns it away."""

from __future__ import annotations

import numpy as np

from physics.model import Model


def heat(
    model: Model, x: np.ndarray, damage: np.ndarray, tip: np.ndarray, radius: float, rate: float, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raise damage of live tets whose centre is within radius of the tip (linear fall-off).

    rate is the tip's heat (1/s at the tip centre) times each tissue's burn_rate. Returns (heated tet ids,
    tets now burned through, damage >= 1). Damage is updated in place.
    """
    live = np.flatnonzero(model.alive)
    centre = x[model.tets[live]].mean(axis=1)
    dist = np.linalg.norm(centre - tip, axis=1)
    near = dist < radius
    ids = live[near]
    if ids.size == 0:
        return ids.astype(np.int32), ids.astype(np.int32)
    falloff = 1.0 - dist[near] / radius
    damage[ids] = np.minimum(1.0, damage[ids] + rate * model.per_tet("burn_rate")[ids] * falloff * dt)
    return ids.astype(np.int32), ids[damage[ids] >= 1.0].astype(np.int32)
