"""Labelled voxel volumes (CT/MRI segmentations) to conforming tetrahedral meshes.

Each labelled voxel becomes a cube split into 6 tets along its main diagonal (the Kuhn/Freudenthal
split). Every cube is split the same way, so neighbouring cubes share faces conformingly and grid
vertices are shared between voxels: the result is one watertight mesh per connected labelled region.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from physics.mesh import MeshError, TetMesh


def _kuhn_tets() -> np.ndarray:
    """The 6 tets of the unit cube along the (0,0,0)-(1,1,1) diagonal as (6, 4, 3) corner offsets."""
    tets = []
    for perm in permutations(range(3)):
        path = [np.zeros(3, dtype=np.int64)]
        for axis in perm:
            step = path[-1].copy()
            step[axis] = 1
            path.append(step)
        corners = np.array(path)
        e = corners[1:] - corners[0]
        if np.linalg.det(e.astype(np.float64)) < 0:  # odd permutation: swap two corners
            corners[[2, 3]] = corners[[3, 2]]
        tets.append(corners)
    return np.array(tets, dtype=np.int64)


KUHN_TETS = _kuhn_tets()
"""Corner offsets (6, 4, 3) of the positively oriented Kuhn split of a unit cube."""


def _check_spacing(spacing, origin) -> tuple[np.ndarray, np.ndarray]:
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be 3 positive finite numbers (dx, dy, dz), got {spacing.tolist()}")
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise ValueError(f"origin must be 3 finite numbers, got {origin.tolist()}")
    return spacing, origin


def label_volume_to_mesh(
    labels: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    background: int = 0,
) -> tuple[TetMesh, np.ndarray]:
    """Mesh every non-background voxel of a 3D label array indexed [i, j, k] along x, y, z.

    Voxel (i, j, k) spans origin + (i, j, k) * spacing to origin + (i+1, j+1, k+1) * spacing.
    Returns the mesh and `label_values`, the sorted unique non-background labels: tet region r
    means label `label_values[r]` (one material per label). A boolean mask counts as labels 0/1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise MeshError(f"labels must be a 3D array indexed [i, j, k], got {labels.ndim} dimensions")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise MeshError(f"labels must have an integer dtype (one id per tissue), got {labels.dtype}")
    spacing, origin = _check_spacing(spacing, origin)

    solid = labels != background
    if not np.any(solid):
        raise MeshError(f"label volume of shape {labels.shape} has no voxel other than background {background}")
    label_values = np.unique(labels[solid])

    _, ny, nz = labels.shape
    ijk = np.argwhere(solid).astype(np.int64)  # (v, 3), C order: deterministic
    corners = ijk[:, None, None, :] + KUHN_TETS[None]  # (v, 6, 4, 3) grid corners
    grid_ids = (corners[..., 0] * (ny + 1) + corners[..., 1]) * (nz + 1) + corners[..., 2]
    grid_ids = grid_ids.reshape(-1, 4)

    used, tets = np.unique(grid_ids, return_inverse=True)
    tets = tets.reshape(-1, 4)
    gi, rest = np.divmod(used, (ny + 1) * (nz + 1))
    gj, gk = np.divmod(rest, nz + 1)
    vertices = origin + np.stack([gi, gj, gk], axis=1) * spacing

    regions = np.searchsorted(label_values, labels[solid])
    regions = np.repeat(regions, 6)
    return TetMesh(vertices, tets, regions), label_values
