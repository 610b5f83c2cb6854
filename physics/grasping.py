"""Grasping: closing jaws attach the tissue points between them; opening or overload releases them."""

from __future__ import annotations

import numpy as np

from physics.instruments import InstrumentSpec
from physics.model import Model
from physics.state import Grasp

CLOSED_BELOW = 0.15  # rad: jaws closing through this opening take hold
OPEN_ABOVE = 0.30  # rad: jaws opening past this let go (hysteresis keeps a trembling hand's grasp)
GRASP_COMPLIANCE = 1e-5  # m/N: the jaws hold firmly but not infinitely stiffly


def find_grasp(
    model: Model, x: np.ndarray, spec: InstrumentSpec, position: np.ndarray, rotation: np.ndarray
) -> Grasp | None:
    """Tissue points inside the closed jaws' region, as a Grasp, or None when the jaws hold nothing.

    Vertices inside the region are held directly; if none is (coarse mesh), the nearest surface point
    within reach is held through its triangle's barycentric weights.
    """
    local = (x - position) @ rotation  # rows: R^T (x - p)
    movable = model.vertex_used() & (model.inv_mass > 0)
    radial = np.hypot(local[:, 0], local[:, 1])
    # The region starts at the hinge plane, in front of the shaft, so the shaft never pushes held tissue.
    inside = movable & (local[:, 2] >= 0.0) & (local[:, 2] <= spec.grasp_length) & (radial <= spec.grasp_radius)
    ids = np.flatnonzero(inside)
    if ids.size:
        verts = np.repeat(ids[:, None], 3, axis=1).astype(np.int32)
        weights = np.zeros((ids.size, 3))
        weights[:, 0] = 1.0
        points = local[ids]
    else:
        found = _nearest_surface_point(model, local, movable, spec)
        if found is None:
            return None
        verts, weights, points = found
    tear = _strength_near(model, verts[:, 0]) * spec.jaw_area
    return Grasp(verts, weights, points, tear_force=float(tear))


def _nearest_surface_point(
    model: Model, local: np.ndarray, movable: np.ndarray, spec: InstrumentSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    tris = model.surface
    if tris.size == 0:
        return None
    centre = np.array([0.0, 0.0, 0.5 * spec.grasp_length])
    a, b, c = local[tris[:, 0]], local[tris[:, 1]], local[tris[:, 2]]
    weights = _closest_barycentric(centre, a, b, c)
    points = weights[:, :1] * a + weights[:, 1:2] * b + weights[:, 2:] * c
    dist = np.linalg.norm(points - centre, axis=1)
    dist[~movable[tris].any(axis=1)] = np.inf
    best = int(np.argmin(dist))
    if not dist[best] <= 1.5 * spec.grasp_radius:
        return None
    return tris[best : best + 1].astype(np.int32), weights[best : best + 1], points[best : best + 1]


def _closest_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights of the point of each triangle nearest p (projection, clipped to the triangle)."""
    ab, ac, ap = b - a, c - a, p - a
    d00 = np.einsum("ij,ij->i", ab, ab)
    d01 = np.einsum("ij,ij->i", ab, ac)
    d11 = np.einsum("ij,ij->i", ac, ac)
    d20 = np.einsum("ij,ij->i", ap, ab)
    d21 = np.einsum("ij,ij->i", ap, ac)
    denom = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-30, d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    bary = np.clip(np.stack([1.0 - v - w, v, w], axis=1), 0.0, None)
    return bary / np.maximum(bary.sum(axis=1, keepdims=True), 1e-30)


def _strength_near(model: Model, vertices: np.ndarray) -> float:
    """The weakest tensile strength (Pa) among live tets touching these vertices."""
    touching = model.alive & np.isin(model.tets, vertices).any(axis=1)
    strength = model.per_tet("strength")[touching]
    return float(strength.min()) if strength.size else float(model.per_tet("strength").min())
