"""Cutting: closing scissor blades split the tissue along their path (a face-aligned incision), producing a
topology-change record.

The tets the blades sweep (``swept_tets``) are the ones the blade plane crosses; each is on the side of the
plane its centre is on, and the faces between tets on opposite sides of a swept tet are opened
(``physics.topology.split_along_faces``): their vertices are duplicated so the two sides separate. No tet is
removed, so no volume or mass is lost and no gap opens; the cut surface follows tet faces (a staircase within
one tet of the blade plane) and no new, possibly degenerate, tet is made. ``wound_pairs`` lists the vertices
duplicated across the cuts, for sutures to pull together.

Blades and tissue (``blades_collide``): closed scissors that stay closed push tissue like any instrument part
(a blunt probe: they do not pass through it); open blades pass through tissue, so they can be placed across
it (a simplification: a real blade's edge pierces, its flat side pushes), and closing blades cut what they
sweep instead of pushing it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from physics.model import Model
from physics.state import State
from physics.topology import Split, TopologyChange, VertexCapError, split_along_faces

BLADES_CLOSED_BELOW = 0.15  # rad: blades opened less than this are closed (like grasping.CLOSED_BELOW)
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
    position = np.asarray(position, dtype=np.float64)
    normal = np.ascontiguousarray(rotation[:, 1], dtype=np.float64)
    live = tets_near_plane(x, position, blade_length + REACH_MARGIN, normal, model.tets, model.alive)
    return fan_swept(model, x, live, position, rotation, jaw_before, jaw_after, blade_length)


def fan_swept(
    model: Model,
    x: np.ndarray,
    live: np.ndarray,
    position: np.ndarray,
    rotation: np.ndarray,
    jaw_before: float,
    jaw_after: float,
    blade_length: float,
) -> np.ndarray:
    """Of the candidate tets ``live``, those the closing blades' fans sweep (see swept_tets), as int32."""
    local = (x[model.tets[live]] - position) @ rotation  # (k, 4, 3) in the instrument frame
    ly = local[:, :, 1]
    straddles = (ly.min(axis=1) <= 0.0) & (ly.max(axis=1) >= 0.0)
    angle = np.arctan2(local[:, :, 0], local[:, :, 2])  # from +z towards +x, in the blade plane
    crosses = blades_cross(angle.min(axis=1), angle.max(axis=1), jaw_before, jaw_after)
    within = np.hypot(local[:, :, 0], local[:, :, 2]).min(axis=1) <= blade_length
    ahead = local[:, :, 2].max(axis=1) > 0.0
    return live[straddles & crosses & within & ahead].astype(np.int32)


def blades_cross(lo, hi, jaw_before: float, jaw_after: float):
    """Whether angular spans [lo, hi] (rad, in the blade plane from the instrument's +z towards +x; arrays or
    floats) meet the fans the closing blades sweep: between half the new and half the old opening, either side
    of +z. Shared by the tissue's cut (a tet's corners' span) and the thread's (physics.thread_cut: a segment's
    crossing of the blade plane, lo = hi)."""
    fan_lo, fan_hi = 0.5 * jaw_after, 0.5 * jaw_before
    return ((hi >= fan_lo) & (lo <= fan_hi)) | ((hi >= -fan_hi) & (lo <= -fan_lo))


def blades_collide(jaw_before: float, jaw_after: float) -> bool:
    """Whether scissor blades push tissue over a frame whose jaw goes from jaw_before to jaw_after (radians):
    only closed blades that are not closing (see the module doc)."""
    return jaw_after >= jaw_before and max(jaw_before, jaw_after) < BLADES_CLOSED_BELOW


@dataclass(frozen=True)
class CutRefused:
    """A closing of the blades that would have cut but was refused (reason says why; nothing changed)."""

    reason: str
    tets: int  # how many tets the blades crossed


def cut(
    model: Model,
    state: State,
    instrument: int | None,
    position: np.ndarray,
    rotation: np.ndarray,
    jaw_before: float,
    jaw_after: float,
    blade_length: float,
) -> tuple[TopologyChange, Split, int] | CutRefused | None:
    """Split the tissue the closing blades cross (see the module doc); the caller tells its Solver
    (notify_model_changed). Returns (the change, the split, how many tets the blades crossed), CutRefused
    when the model's vertex cap would be passed, or None when the blades crossed nothing to open."""
    swept = swept_tets(model, state.x, position, rotation, jaw_before, jaw_after, blade_length)
    if swept.size == 0:
        return None
    faces = incision_faces(model, state.x, swept, position, rotation)
    try:
        split = split_along_faces(model, state, faces)
    except VertexCapError as exc:
        return CutRefused(str(exc), int(swept.size))
    if split.sources.size == 0:
        return None
    change = TopologyChange(
        model.epoch,
        "cut",
        instrument,
        np.zeros(0, np.int32),
        split.removed_triangles,
        split.added_triangles,
        new_vertices=split.sources,
        first_new=split.first_new,
    )
    return change, split, int(swept.size)


def incision_faces(
    model: Model, x: np.ndarray, swept: np.ndarray, position: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    """(f, 2) int32 (tet, face): the interior faces of the swept tets whose neighbour's centre lies on the other
    side of the blade plane (local y = 0 of the instrument frame) than the tet's own centre. Together they
    separate the swept band's two sides along tet faces."""
    swept = np.asarray(swept, dtype=np.int64)
    if swept.size == 0:
        return np.zeros((0, 2), np.int32)
    normal = np.asarray(rotation, dtype=np.float64)[:, 1]
    position = np.asarray(position, dtype=np.float64)
    across = model.neighbour[swept].astype(np.int64)  # (s, 4)
    live = (across >= 0) & model.alive[np.maximum(across, 0)]
    ids = np.concatenate([swept, across[live]])
    side = (x[model.tets[ids]].mean(axis=1) - position) @ normal >= 0.0
    own = np.repeat(side[: swept.size, None], 4, axis=1)
    other = np.zeros_like(own)
    other[live] = side[swept.size :]
    rows, faces = np.nonzero(live & (own != other))
    return np.stack([swept[rows], faces], axis=1).astype(np.int32)


def wound_pairs(model: Model) -> np.ndarray:
    """(k, 2) int32: every vertex pair (original, copy) that split cuts separated, oldest cut first; both still
    belong to live tissue. A suture pulling a pair together closes the wound there (the pair coincided at rest:
    model.rest_positions of both are equal)."""
    pairs = model.wound_pairs
    used = model.vertex_used()
    return pairs[used[pairs].all(axis=1)] if pairs.size else pairs.reshape(0, 2)


def wound_gap(model: Model, x: np.ndarray, pairs: np.ndarray | None = None) -> float:
    """The widest opening (m) across the wound pairs (``wound_pairs(model)`` unless given) at positions x; 0
    without any. A closed wound's gap is near 0: what a "wound closed" check compares with its tolerance."""
    pairs = wound_pairs(model) if pairs is None else np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.size == 0:
        return 0.0
    return float(np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1).max())


def blade_length(capsules: np.ndarray) -> float:
    """Length of the longest jaw capsule of an instrument spec."""
    jaws = capsules[capsules[:, 7] != 0]
    return float(np.linalg.norm(jaws[:, 3:6] - jaws[:, 0:3], axis=1).max()) if jaws.size else 0.0


# Slack (m) of the plane test in tets_near_plane: far above the round-off of local coordinates (~1e-17 m), far
# below a tet, so the exact numpy test still decides every tet it could accept.
PLANE_SLACK = 1e-9


@nb.njit(nogil=True, cache=True)
def tets_near_plane(x, position, reach, normal, tets, alive):
    """Ids (ascending, int64) of the live tets with a vertex within `reach` of `position` whose corners are not
    all more than PLANE_SLACK on one side of the plane through `position` with that `normal` (the blades' plane).

    The reach test is np.linalg.norm(x - position, axis=1) <= reach (same rounding); the plane test only drops
    tets that cannot straddle the plane, which swept_tets would drop too. One pass instead of numpy over every
    vertex and tet (~100 us a frame while a pair of scissors closed)."""
    near = np.empty(x.shape[0], dtype=np.bool_)
    side = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        dx, dy, dz = x[i, 0] - position[0], x[i, 1] - position[1], x[i, 2] - position[2]
        near[i] = math.sqrt(dx * dx + dy * dy + dz * dz) <= reach
        side[i] = dx * normal[0] + dy * normal[1] + dz * normal[2]
    out = np.empty(tets.shape[0], dtype=np.int64)
    count = 0
    for t in range(tets.shape[0]):
        a, b, c, d = tets[t, 0], tets[t, 1], tets[t, 2], tets[t, 3]
        if not (alive[t] and (near[a] or near[b] or near[c] or near[d])):
            continue
        lo = min(min(side[a], side[b]), min(side[c], side[d]))
        hi = max(max(side[a], side[b]), max(side[c], side[d]))
        if lo <= PLANE_SLACK and hi >= -PLANE_SLACK:
            out[count] = t
            count += 1
    return out[:count]
