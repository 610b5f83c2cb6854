"""Cutting: closing scissor blades remove the tets they sweep, producing a topology-change record."""

from __future__ import annotations

import numpy as np

from physics.model import Model

REACH_MARGIN = 0.01  # m: vertices farther than blade length + this from the hinge are not considered


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

    The blades move in the instrument's local x-z plane, each sweeping a fan between half the old and
    half the new opening, out to the blade length. A tet is swept when it straddles (or touches) that
    plane and its corners' angular span meets a fan, so a cut leaves no vertex shared across it.
    """
    if not jaw_after < jaw_before:
        return np.zeros(0, dtype=np.int32)
    near = np.linalg.norm(x - position, axis=1) <= blade_length + REACH_MARGIN
    live = np.flatnonzero(model.alive & near[model.tets].any(axis=1))
    local = (x[model.tets[live]] - position) @ rotation  # (k, 4, 3) in the instrument frame
    ly = local[:, :, 1]
    straddles = (ly.min(axis=1) <= 0.0) & (ly.max(axis=1) >= 0.0)
    angle = np.arctan2(local[:, :, 0], local[:, :, 2])  # from +z towards +x, in the blade plane
    lo, hi = angle.min(axis=1), angle.max(axis=1)
    fan_lo, fan_hi = 0.5 * jaw_after, 0.5 * jaw_before
    crosses = ((hi >= fan_lo) & (lo <= fan_hi)) | ((hi >= -fan_hi) & (lo <= -fan_lo))
    within = np.hypot(local[:, :, 0], local[:, :, 2]).min(axis=1) <= blade_length
    ahead = local[:, :, 2].max(axis=1) > 0.0
    return live[straddles & crosses & within & ahead].astype(np.int32)


def blade_length(capsules: np.ndarray) -> float:
    """Length of the longest jaw capsule of an instrument spec."""
    jaws = capsules[capsules[:, 7] != 0]
    return float(np.linalg.norm(jaws[:, 3:6] - jaws[:, 0:3], axis=1).max()) if jaws.size else 0.0
