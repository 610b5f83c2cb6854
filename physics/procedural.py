"""Procedural anatomy: a tissue block, a liver-like lobe and a gallbladder with its cystic duct.

Organs are implicit functions (negative inside) sampled at voxel centres, meshed with the voxel
mesher, then smoothed: boundary vertices are pulled toward the implicit surface by a few Newton
steps, each vertex moving at most ~0.3 voxel, and any move that would invert or crush a tet is
undone. Output is deterministic and a single connected piece (the largest face-connected set of
voxels is kept). Axes: +y up, metres.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from physics.mesh import MeshError, TetMesh, signed_volumes
from physics.surface import boundary_triangles, graph_components
from physics.voxels import label_volume_to_mesh

Implicit = Callable[[np.ndarray], np.ndarray]
"""Maps points (n, 3) to values (n,): negative inside, zero on the surface, positive outside."""

MAX_MOVE = 0.3  # largest boundary-vertex move while smoothing, in voxels
MIN_VOLUME_RATIO = 0.2  # a smoothed tet keeps at least this fraction of its voxel volume


def tissue_block(
    size: tuple[float, float, float] = (0.06, 0.02, 0.03),
    cells: tuple[int, int, int] = (12, 4, 6),
    origin: tuple[float, float, float] | None = None,
) -> TetMesh:
    """A box of size (x, y, z) metres made of `cells` cubes, 6 tets each, all region 0.

    By default the block is centred in x and z with its bottom face at y = 0.
    """
    size_a = np.asarray(size, dtype=np.float64)
    cells_a = np.asarray(cells)
    if size_a.shape != (3,) or not np.all(np.isfinite(size_a)) or np.any(size_a <= 0):
        raise ValueError(f"size must be 3 positive finite lengths, got {size}")
    if cells_a.shape != (3,) or not np.issubdtype(cells_a.dtype, np.integer) or np.any(cells_a < 1):
        raise ValueError(f"cells must be 3 positive integers, got {cells}")
    if origin is None:
        origin = (-size_a[0] / 2, 0.0, -size_a[2] / 2)
    mesh, _ = label_volume_to_mesh(np.ones(tuple(cells_a), dtype=np.uint8), size_a / cells_a, origin)
    return mesh


def vertices_in_box(mesh: TetMesh, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> np.ndarray:
    """Indices of the vertices inside the closed axis-aligned box [lo, hi] (e.g. a ligament to pin)."""
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo_a.shape != (3,) or hi_a.shape != (3,) or np.any(lo_a > hi_a):
        raise ValueError(f"box corners must be 3-vectors with lo <= hi, got lo={lo}, hi={hi}")
    inside = np.all((mesh.vertices >= lo_a) & (mesh.vertices <= hi_a), axis=1)
    return np.flatnonzero(inside)


def _largest_piece(solid: np.ndarray) -> np.ndarray:
    """Keep the largest face-connected set of True voxels (drops specks that would float free)."""
    index = np.full(solid.shape, -1, dtype=np.int64)
    index[solid] = np.arange(int(solid.sum()))
    us, vs = [], []
    for axis in range(3):  # face neighbours along each axis
        a = np.swapaxes(index, 0, axis)
        pair = (a[:-1] >= 0) & (a[1:] >= 0)
        us.append(a[:-1][pair])
        vs.append(a[1:][pair])
    _, labels = graph_components(int(solid.sum()), np.concatenate(us), np.concatenate(vs))
    keep = labels == np.argmax(np.bincount(labels))
    out = np.zeros_like(solid)
    out[solid] = keep
    return out


def _gradient(f: Implicit, p: np.ndarray, eps: float) -> np.ndarray:
    """Central-difference gradient of an implicit function at points p (n, 3)."""
    grad = np.empty_like(p)
    for axis in range(3):
        d = np.zeros(3)
        d[axis] = eps
        grad[:, axis] = (f(p + d) - f(p - d)) / (2 * eps)
    return grad


def _fit_surface(mesh: TetMesh, f: Implicit, h: float, steps: int = 4) -> TetMesh:
    """Move boundary vertices toward f = 0 (at most MAX_MOVE * h each) without crushing any tet."""
    rest = mesh.vertices
    rest_vol = signed_volumes(rest, mesh.tets)
    ids = np.unique(boundary_triangles(mesh.tets))
    p = rest[ids].copy()
    for _ in range(steps):
        g = _gradient(f, p, 1e-3 * h)
        g2 = np.einsum("ij,ij->i", g, g)
        step = -(f(p) / np.maximum(g2, 1e-30))[:, None] * g
        q = p + np.where(g2[:, None] > 0, step, 0.0)
        move = q - rest[ids]
        dist = np.linalg.norm(move, axis=1, keepdims=True)
        p = rest[ids] + move * np.minimum(1.0, MAX_MOVE * h / np.maximum(dist, 1e-30))

    vertices = rest.copy()
    vertices[ids] = p
    for _ in range(100):  # undo the moves around crushed tets; terminates since rest is valid
        bad = signed_volumes(vertices, mesh.tets) < MIN_VOLUME_RATIO * rest_vol
        if not np.any(bad):
            break
        undo = np.unique(mesh.tets[bad])
        vertices[undo] = rest[undo]
    return TetMesh(vertices, mesh.tets, mesh.regions)


def _voxelize(
    parts: list[Implicit], lo: np.ndarray, hi: np.ndarray, h: float, anchor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label voxel centres with 1 + index of the last part containing them (0 = outside).

    Returns the labels and the grid origin. With `anchor`, the grid is shifted so that this point
    is a voxel centre (keeps thin tubes through it from vanishing between samples).
    """
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"resolution must be a positive number of metres, got {h}")
    origin = lo - h
    if anchor is not None:
        origin = anchor - (np.floor((anchor - origin) / h) + 0.5) * h
    shape = tuple(int(s) for s in np.ceil((hi + h - origin) / h))
    if np.prod(shape) > 20_000_000:
        raise ValueError(f"resolution {h} m gives a {shape} voxel grid; use a coarser resolution")
    axes = [origin[a] + (np.arange(shape[a]) + 0.5) * h for a in range(3)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    labels = np.zeros(centres.shape[0], dtype=np.int32)
    for i, part in enumerate(parts):
        labels[part(centres) <= 0] = i + 1
    labels = labels.reshape(shape)
    labels[~_largest_piece(labels > 0)] = 0
    return labels, origin


def _organ(parts: list[Implicit], lo, hi, h: float, anchor=None) -> TetMesh:
    """Voxelise the parts, mesh them (region i = part i) and fit the boundary to their union."""
    labels, origin = _voxelize(parts, np.asarray(lo, float), np.asarray(hi, float), h, anchor)
    mesh, values = label_volume_to_mesh(labels, (h, h, h), origin)
    if values.size != len(parts):
        raise MeshError(f"resolution {h} m is too coarse: only {values.size} of {len(parts)} regions remain")

    def union(p: np.ndarray) -> np.ndarray:
        return np.min([part(p) for part in parts], axis=0)

    return _fit_surface(mesh, union, h)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


# Liver lobe: 0.20 m along x, up to 0.08 m thick (y), 0.15 m deep (z). The thick rounded side is at
# -x and tapers to a thin edge at +x. The bottom rests on the plane y = 0 (flat along z = 0, curving up
# toward the front and back), and the lobe is centred in x and z.
_LIVER_HALF = np.array([0.10, 0.04, 0.075])


def _liver_thickness(x: np.ndarray) -> np.ndarray:
    """Half-thickness in y: 0.04 m on the thick (-x) side down to 0.008 m at the thin (+x) edge."""
    s = _smoothstep((x + 0.06) / 0.16)
    return 0.040 - 0.032 * s


def _liver(p: np.ndarray) -> np.ndarray:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    b = _liver_thickness(x)
    c = _LIVER_HALF[2] * (1.0 - 0.15 * _smoothstep((x + 0.02) / 0.12))  # narrower toward the thin edge
    q = (x / _LIVER_HALF[0]) ** 2 + ((y - b) / b) ** 2 + (z / c) ** 2
    return (np.sqrt(q) - 1.0) * 0.04


_PORTAL_A = np.array([0.02, 0.018, 0.035])  # hilum, near the centre of the lower surface
_PORTAL_B = np.array([-0.07, 0.022, -0.02])  # deep into the thick side
_PORTAL_RADIUS = 0.006


def _portal(p: np.ndarray) -> np.ndarray:
    return _segment_distance(p, _PORTAL_A, _PORTAL_B) - _PORTAL_RADIUS


def liver_lobe(resolution: float = 0.006) -> TetMesh:
    """A liver-like lobe (~0.20 x 0.08 x 0.15 m): region 0 parenchyma, region 1 a portal vein branch.

    An asymmetric flattened ellipsoid, thick and rounded at -x and thinning to an edge at +x, resting
    on y = 0 and centred in x and z. The vein is a 12 mm tube from the hilum into the thick side.
    `resolution` is the voxel edge in metres.
    """

    def vein(p: np.ndarray) -> np.ndarray:
        return np.maximum(_portal(p), _liver(p))  # the tube only where it runs through the lobe

    lo, hi = -_LIVER_HALF * [1, 0, 1], _LIVER_HALF * [1, 2, 1]
    return _organ([_liver, vein], lo, hi, resolution, anchor=_PORTAL_A)


# Gallbladder: a pear-shaped sac along x, fundus (wide, ~0.03 m) at +x, neck at -x, 0.08 m long, centre
# of the sac near the origin; the cystic duct leaves the neck along -x.
_GB_BODY_C, _GB_BODY_R = np.array([0.010, 0.0, 0.0]), np.array([0.030, 0.015, 0.015])
_GB_NECK_C, _GB_NECK_R = np.array([-0.024, 0.0, 0.0]), np.array([0.016, 0.0075, 0.0075])
_DUCT_A, _DUCT_B = np.array([-0.036, 0.0, 0.0]), np.array([-0.070, 0.0, 0.0])
_DUCT_RADIUS = 0.0025


def _ellipsoid(p: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (np.linalg.norm((p - centre) / radii, axis=1) - 1.0) * radii.min()


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    hmix = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * hmix - k * hmix * (1 - hmix)


def _gallbladder_sac(p: np.ndarray) -> np.ndarray:
    return _smooth_min(_ellipsoid(p, _GB_BODY_C, _GB_BODY_R), _ellipsoid(p, _GB_NECK_C, _GB_NECK_R), 0.006)


def gallbladder(resolution: float = 0.004) -> TetMesh:
    """A pear-shaped gallbladder (~0.08 m long, ~0.03 m wide) with a cystic duct leaving its neck.

    The sac lies along x (fundus at +x, centred near the origin); the duct is a 5 mm wide tube running
    from the neck along -x to x = -0.07 m. Region 0 = gallbladder, region 1 = duct. The duct is meshed
    at least one voxel wide, so at coarse resolutions it is thicker than 5 mm.
    """
    radius = max(_DUCT_RADIUS, 0.55 * resolution)  # at least the column of voxels on its axis

    def duct(p: np.ndarray) -> np.ndarray:
        return np.maximum(_segment_distance(p, _DUCT_A, _DUCT_B) - radius, -_gallbladder_sac(p))

    lo = np.array([_DUCT_B[0], -_GB_BODY_R[1], -_GB_BODY_R[2]])
    hi = _GB_BODY_C + _GB_BODY_R
    return _organ([_gallbladder_sac, duct], lo, hi, resolution, anchor=_DUCT_B)
