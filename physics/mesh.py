"""Tetrahedral meshes: the geometry every organ, import and generator produces.

Units are SI (metres). Axes follow Unity/OpenXR: +y is up. Tets are stored with positive orientation
(det[x1-x0, x2-x0, x3-x0] > 0) so that the solver's rest matrices are well defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np


class MeshError(ValueError):
    """A mesh that cannot be simulated (bad shape, bad indices, degenerate or empty tets)."""


@dataclass
class TetMesh:
    """Vertices (n, 3) float64, tets (m, 4) int32 and one region label per tet (m,) int32.

    Region labels index the material table the model is built with (one material per label).
    """

    vertices: np.ndarray
    tets: np.ndarray
    regions: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64)
        self.tets = np.ascontiguousarray(self.tets, dtype=np.int32)
        self.regions = np.ascontiguousarray(self.regions, dtype=np.int32)
        validate(self)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_tets(self) -> int:
        return int(self.tets.shape[0])


def signed_volumes(vertices: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volume of each tet (positive for the orientation the solver expects)."""
    x0 = vertices[tets[:, 0]]
    e1 = vertices[tets[:, 1]] - x0
    e2 = vertices[tets[:, 2]] - x0
    e3 = vertices[tets[:, 3]] - x0
    return np.einsum("ij,ij->i", e1, np.cross(e2, e3)) / 6.0


@nb.njit(cache=True, nogil=True)
def count_inverted(vertices: np.ndarray, tets: np.ndarray, alive: np.ndarray) -> int:
    """How many live tets have a signed volume <= 0 (signed_volumes' sign, in one pass with no temporaries: the
    room's once-a-second health check was 0.4 ms of numpy at 5k tets, a spike in its tick's p99)."""
    n = 0
    e = np.empty((3, 3))  # the edges from corner 0
    for t in range(tets.shape[0]):
        if not alive[t]:
            continue
        a = tets[t, 0]
        for k in range(3):
            for j in range(3):
                e[k, j] = vertices[tets[t, k + 1], j] - vertices[a, j]
        det = (
            e[0, 0] * (e[1, 1] * e[2, 2] - e[1, 2] * e[2, 1])
            + e[0, 1] * (e[1, 2] * e[2, 0] - e[1, 0] * e[2, 2])
            + e[0, 2] * (e[1, 0] * e[2, 1] - e[1, 1] * e[2, 0])
        )
        if det <= 0.0:
            n += 1
    return n


def validate(mesh: TetMesh) -> None:
    """Raise MeshError unless the mesh is finite, indexed correctly and has no degenerate tets."""
    v, t, r = mesh.vertices, mesh.tets, mesh.regions
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise MeshError(f"vertices must have shape (n, 3) with n > 0, got {v.shape}")
    if t.ndim != 2 or t.shape[1] != 4 or t.shape[0] == 0:
        raise MeshError(f"tets must have shape (m, 4) with m > 0, got {t.shape}")
    if r.shape != (t.shape[0],):
        raise MeshError(f"regions must have one label per tet ({t.shape[0]}), got shape {r.shape}")
    if not np.all(np.isfinite(v)):
        raise MeshError("vertices contain NaN or Inf")
    if t.min() < 0 or t.max() >= v.shape[0]:
        raise MeshError(f"tet indices must lie in [0, {v.shape[0]}), got [{t.min()}, {t.max()}]")
    if r.min() < 0:
        raise MeshError("region labels must be >= 0")
    vol = signed_volumes(v, t)
    scale = float(np.ptp(v, axis=0).max()) or 1.0
    bad = np.flatnonzero(vol <= 1e-12 * scale**3)
    if bad.size:
        raise MeshError(f"{bad.size} tets are degenerate or inverted (first: tet {bad[0]}, volume {vol[bad[0]]:.3g})")


def oriented(vertices: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Return a copy of tets with negatively oriented ones flipped (swap of two corners)."""
    tets = np.array(tets, dtype=np.int32, copy=True)
    neg = signed_volumes(np.asarray(vertices, dtype=np.float64), tets) < 0
    tets[neg, 2], tets[neg, 3] = tets[neg, 3].copy(), tets[neg, 2].copy()
    return tets


def drop_unused_vertices(vertices: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove vertices that no tet references and renumber the tets."""
    used = np.unique(tets)
    remap = np.full(vertices.shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return vertices[used], remap[tets].astype(np.int32)
