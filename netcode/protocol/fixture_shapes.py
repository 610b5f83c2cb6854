"""Virtual fixture shapes and their geometry: signed distance, first contact along a motion, closest points.

Why here: the server enforces fixtures on instrument tips (``rehearsal.fixtures``) and the thin client renders
them as forces (``netcode.thin_client.haptics``); both must mean the same thing by "inside a capsule", so the
geometry lives beside the ``fixtures`` message (``netcode.protocol.fixtures``) that carries the shapes.

Forbidden regions and no-energy zones are ``Sphere``, ``Capsule`` or ``TriangleMesh`` (a closed triangle mesh
grown by a margin). ``distance(x)`` is the signed distance (m, < 0 inside) with the outward normal; it is exact
(1-Lipschitz), so ``first_contact`` can march a motion by sphere tracing and never step over a thin region,
however fast the tip moves. Guidance fixtures are ``Plane`` and ``Polyline``: ``closest(x)`` is where the tip
should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from netcode.protocol.mesh_distance import mesh_signed_distance

CONTACT_TOLERANCE = 1e-5  # m: a tip this close to a region's boundary is in contact with it
MAX_MARCH_STEPS = 96  # sphere-tracing steps of one motion; a motion still grazing after them stops there


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = math.sqrt(float(v @ v))
    return v / n if n > 1e-12 else fallback


_UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class Sphere:
    """A ball: centre (m) and radius (m)."""

    center: tuple[float, float, float]
    radius: float

    def distance(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        d = np.asarray(x, dtype=np.float64) - np.asarray(self.center)
        r = math.sqrt(float(d @ d))
        return r - self.radius, _unit(d, _UP)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center)
        return c - self.radius, c + self.radius


@dataclass(frozen=True)
class Capsule:
    """The points within ``radius`` of the segment a-b (m): a vessel or a duct's keep-out."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float

    def distance(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        a, b = np.asarray(self.a), np.asarray(self.b)
        ab = b - a
        denom = float(ab @ ab)
        t = 0.0 if denom < 1e-18 else min(max(float((x - a) @ ab) / denom, 0.0), 1.0)
        d = x - (a + t * ab)
        r = math.sqrt(float(d @ d))
        return r - self.radius, _unit(d, _UP)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.asarray(self.a), np.asarray(self.b)
        return np.minimum(a, b) - self.radius, np.maximum(a, b) + self.radius


@dataclass(frozen=True, eq=False)
class TriangleMesh:
    """A closed triangle mesh (vertices (n, 3) m, triangles (m, 3) indices, outward or inward wound: the inside is
    decided by the winding number, not the winding order), grown by ``margin`` (m): the region is every point
    inside the mesh or within ``margin`` of its surface."""

    vertices: np.ndarray
    triangles: np.ndarray
    margin: float = 0.0
    _centroid: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float64)
        t = np.ascontiguousarray(self.triangles, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or t.ndim != 2 or t.shape[1] != 3 or t.shape[0] == 0:
            raise ValueError("a triangle mesh needs (n, 3) vertices and at least one (m, 3) triangle")
        if t.min() < 0 or t.max() >= v.shape[0] or not np.all(np.isfinite(v)):
            raise ValueError("triangle indices must name vertices, and vertices must be finite")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "triangles", t)
        object.__setattr__(self, "_centroid", v.mean(axis=0))
        self.distance(self._centroid)  # compiles (or loads) the kernel now, not in the first haptic cycle

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0) - self.margin, self.vertices.max(axis=0) + self.margin

    def distance(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return mesh_signed_distance(
            self.vertices, self.triangles, self._centroid, self.margin, np.asarray(x, dtype=np.float64)
        )


Region = Sphere | Capsule | TriangleMesh


@dataclass(frozen=True)
class Plane:
    """Guidance: stay on the plane through ``point`` with normal ``normal`` (m)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]

    def closest(self, x: np.ndarray) -> np.ndarray:
        n = _unit(np.asarray(self.normal, dtype=np.float64), _UP)
        x = np.asarray(x, dtype=np.float64)
        return x - float((x - np.asarray(self.point)) @ n) * n


@dataclass(frozen=True, eq=False)
class Polyline:
    """Guidance: follow the path through ``points`` ((k, 3) m, k >= 2)."""

    points: np.ndarray

    def __post_init__(self) -> None:
        p = np.ascontiguousarray(self.points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 2 or not np.all(np.isfinite(p)):
            raise ValueError("a polyline needs at least 2 finite 3D points")
        object.__setattr__(self, "points", p)

    def closest(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        a, b = self.points[:-1], self.points[1:]
        ab = b - a
        denom = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18)
        t = np.clip(np.einsum("ij,ij->i", x - a, ab) / denom, 0.0, 1.0)
        q = a + ab * t[:, None]
        diff = q - x
        return q[int(np.argmin(np.einsum("ij,ij->i", diff, diff)))]


Guide = Plane | Polyline


def inside(region: Region, x: np.ndarray) -> bool:
    """Whether x lies strictly inside the region (beyond the contact tolerance)."""
    return region.distance(x)[0] < -CONTACT_TOLERANCE


def first_contact(region: Region, p0: np.ndarray, p1: np.ndarray) -> float | None:
    """The fraction t in [0, 1] of the motion p0 -> p1 at which it first touches the region, or None when it
    stays outside. Sphere tracing on the exact signed distance: each step is no longer than the distance to the
    region, so no step can cross it. A motion still grazing the surface after ``MAX_MARCH_STEPS`` stops there
    (reported as a contact: conservative). p0 must be outside (a p0 inside returns 0)."""
    p0 = np.asarray(p0, dtype=np.float64)
    seg = np.asarray(p1, dtype=np.float64) - p0
    length = math.sqrt(float(seg @ seg))
    d0 = region.distance(p0)[0]
    if d0 <= CONTACT_TOLERANCE:
        return 0.0
    if length < 1e-12:
        return None
    lo, hi = region.bounds()
    end = p0 + seg
    if np.any(np.minimum(p0, end) > hi + CONTACT_TOLERANCE) or np.any(np.maximum(p0, end) < lo - CONTACT_TOLERANCE):
        return None  # the motion's box misses the region's box
    t, d = 0.0, d0
    for _ in range(MAX_MARCH_STEPS):
        t += d / length
        if t >= 1.0:
            return None if region.distance(end)[0] > CONTACT_TOLERANCE else 1.0
        d = region.distance(p0 + t * seg)[0]
        if d <= CONTACT_TOLERANCE:
            return t
    return t


def boundary_point(region: Region, x: np.ndarray, skin: float = 2 * CONTACT_TOLERANCE) -> np.ndarray:
    """The point just outside the region's boundary (by ``skin``) nearest x (x itself when already outside)."""
    x = np.asarray(x, dtype=np.float64)
    d, normal = region.distance(x)
    if d >= 0:
        return x.copy()
    return x + (skin - d) * normal


def deviation(guide: Guide, x: np.ndarray) -> float:
    """How far x is from the guidance fixture (m)."""
    q = guide.closest(x)
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64) - q))
