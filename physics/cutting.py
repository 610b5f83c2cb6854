"""Cutting: closing scissor blades remove the tets they sweep, producing a topology-change record."""

from __future__ import annotations

import numpy as np

from physics.model import Model


def swept_tets(
    model: Model,
    x: np.ndarray,
    position: np.ndarray,
    rotation: np.ndarray,
    jaw_before: float,
    jaw_after: float,
    blade_length: float,
) -> np.ndarray:
    """Live tets the blades swept while closing from jaw_before to jaw_after (radians).

    The blades move in the instrument's local x-z plane. A tet is swept when it straddles (or touches)
    that plane and its centre lies between the two blade angles within the blade length, so a cut leaves
    no vertex shared by the two sides.
    """
    if not jaw_after < jaw_before:
        return np.zeros(0, dtype=np.int32)
    live = np.flatnonzero(model.alive)
    local = (x[model.tets[live]] - position) @ rotation  # (k, 4, 3) in the instrument frame
    ly = local[:, :, 1]
    straddles = (ly.min(axis=1) <= 0.0) & (ly.max(axis=1) >= 0.0)
    centre = local.mean(axis=1)
    reach = np.hypot(centre[:, 0], centre[:, 2])
    angle = np.abs(np.arctan2(centre[:, 0], centre[:, 2]))
    between = (angle <= 0.5 * jaw_before) & (angle >= 0.5 * jaw_after) & (centre[:, 2] > 0.0)
    return live[straddles & between & (reach <= blade_length)].astype(np.int32)


def blade_length(capsules: np.ndarray) -> float:
    """Length of the longest jaw capsule of an instrument spec."""
    jaws = capsules[capsules[:, 7] != 0]
    return float(np.linalg.norm(jaws[:, 3:6] - jaws[:, 0:3], axis=1).max()) if jaws.size else 0.0
