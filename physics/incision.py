"""A pre-made incision: a slit through a tet mesh along a plane, and the two wound edges it leaves.

Suturing scenarios need a wound to close before split-cutting lands; a slit is the simplest honest one: the tets
on one side of the plane x = x0 (within the slit's depth and length) get their own copies of the vertices on the
plane, so the two sides separate without losing a tet, and the faces on both sides join the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physics.mesh import TetMesh


@dataclass(frozen=True)
class Incision:
    """The slit mesh and its wound edges: vertex ids on the top face along each lip (left: x < x0 side)."""

    mesh: TetMesh
    left_edge: np.ndarray
    right_edge: np.ndarray


def slit(
    mesh: TetMesh, x0: float, depth: float, z_range: tuple[float, float], gape: float = 0.0, tol: float = 1e-9
) -> Incision:
    """Cut a slit at the mesh vertices' plane x = x0 from the top face (largest y) down by depth (m), over
    z_range; raises ValueError when no mesh vertex lies on that plane inside the slit.

    gape (m): the wound's opening at the top in the middle of its length, as a wound in pre-stressed tissue
    retracts: the lips' rest positions part by up to gape, tapering to nothing at the slit's bottom and ends,
    so closing it takes force (the sutures')."""
    v = mesh.vertices
    top = float(v[:, 1].max())
    on_plane = (
        (np.abs(v[:, 0] - x0) <= tol) & (v[:, 1] >= top - depth - tol) & (v[:, 2] >= z_range[0] - tol)
        & (v[:, 2] <= z_range[1] + tol)
    )  # fmt: skip
    # Keep the slit's rim attached: vertices on its bottom or its ends stay shared, so the slit is a closed cut.
    inner = on_plane & (v[:, 1] > top - depth + tol) & (v[:, 2] > z_range[0] + tol) & (v[:, 2] < z_range[1] - tol)
    ids = np.flatnonzero(inner)
    if ids.size == 0:
        raise ValueError(f"slit: no mesh vertex on x = {x0} within the slit (depth {depth}, z {z_range})")
    centres = v[mesh.tets].mean(axis=1)
    right_side = centres[:, 0] > x0
    copy_of = np.full(v.shape[0], -1, dtype=np.int64)
    copy_of[ids] = v.shape[0] + np.arange(ids.size)
    tets = mesh.tets.copy()
    moved = right_side[:, None] & (copy_of[tets] >= 0)
    tets[moved] = copy_of[tets[moved]]
    vertices = np.concatenate([v, v[ids]])
    if gape > 0.0:
        if not (gape < 0.5 * depth and gape < 0.25 * (z_range[1] - z_range[0])):
            raise ValueError(f"slit: gape {gape} m is too wide for a slit {depth} m deep")
        p = v[ids]
        f = (p[:, 1] - (top - depth)) / depth * np.sin(np.pi * (p[:, 2] - z_range[0]) / (z_range[1] - z_range[0]))
        vertices[ids, 0] -= 0.5 * gape * f
        vertices[copy_of[ids], 0] += 0.5 * gape * f
    on_top = np.abs(v[ids, 1] - top) <= tol
    left = ids[on_top]
    right = copy_of[ids[on_top]]
    order = np.argsort(v[left, 2])
    return Incision(TetMesh(vertices, tets.astype(mesh.tets.dtype), mesh.regions.copy()), left[order], right[order])


def gap(x: np.ndarray, left: np.ndarray, right: np.ndarray) -> float:
    """The wound's gap (m): the mean distance between the lips' paired vertices."""
    if left.size == 0:
        return 0.0
    return float(np.linalg.norm(x[left] - x[right], axis=1).mean())
