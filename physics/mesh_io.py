"""Reading and writing meshes: real anatomy in (VTU, Gmsh, MEDIT, ... via meshio), surfaces out.

Imported tet meshes are cleaned into simulation-ready TetMesh objects: only tetrahedra are kept,
tets are oriented positively, unused vertices dropped and region ids remapped to 0..k-1 (the
original ids are returned so scenario files can map materials by the ids the segmentation used).
"""

from __future__ import annotations

import os
from pathlib import Path

import meshio
import numpy as np

from physics.mesh import MeshError, TetMesh, drop_unused_vertices, oriented

REGION_KEYS = ("gmsh:physical", "medit:ref")
"""Integer cell data names holding regions, in order of preference (then any other integer data)."""


def _region_data(mesh: meshio.Mesh, blocks: list[int]) -> np.ndarray | None:
    """Per-tet region ids from the preferred integer cell data that covers every tet block."""
    usable = {}
    for name, arrays in mesh.cell_data.items():
        chosen = [np.asarray(arrays[b]) for b in blocks]
        if all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in chosen):
            usable[name] = np.concatenate(chosen)
    for name in (*REGION_KEYS, *sorted(usable)):
        if name in usable:
            return usable[name]
    return None


def load_tet_mesh(path: str | os.PathLike) -> tuple[TetMesh, np.ndarray]:
    """Load the tetrahedra of any mesh file meshio reads; returns (mesh, original region ids).

    Region of a tet = index into the returned ids, taken from integer cell data ("gmsh:physical",
    then "medit:ref", then any other integer cell data by name), or all 0 (ids [0]) if there is none.
    Quadratic tets ("tetra10") are reduced to their 4 corners. Other cells (surfaces, lines) are ignored.
    """
    try:
        raw = meshio.read(os.fspath(path))
    except Exception as exc:  # meshio raises ReadError, OSError, ValueError, ... depending on the format
        raise MeshError(f"cannot read mesh {os.fspath(path)!r}: {exc}") from exc
    blocks = [b for b, cells in enumerate(raw.cells) if cells.type in ("tetra", "tetra10") and len(cells.data)]
    if not blocks:
        types = sorted({cells.type for cells in raw.cells}) or ["none"]
        raise MeshError(f"mesh {os.fspath(path)!r} has no tetrahedra (cell types: {', '.join(types)})")
    tets = np.concatenate([np.asarray(raw.cells[b].data)[:, :4] for b in blocks]).astype(np.int64)
    points = np.asarray(raw.points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MeshError(f"mesh {os.fspath(path)!r} has points of shape {points.shape}, expected (n, 3)")
    if tets.min() < 0 or tets.max() >= points.shape[0]:
        raise MeshError(f"mesh {os.fspath(path)!r} has tet indices outside [0, {points.shape[0]})")

    data = _region_data(raw, blocks)
    if data is None:
        region_ids, regions = np.zeros(1, dtype=np.int64), np.zeros(tets.shape[0], dtype=np.int64)
    else:
        region_ids, regions = np.unique(data, return_inverse=True)
    vertices, tets = drop_unused_vertices(points, tets)
    try:
        mesh = TetMesh(vertices, oriented(vertices, tets), regions)
    except MeshError as exc:
        raise MeshError(f"mesh {os.fspath(path)!r} cannot be simulated: {exc}") from exc
    return mesh, region_ids


def save_tet_mesh(path: str | os.PathLike, mesh: TetMesh, region_ids: np.ndarray | None = None) -> None:
    """Write a tet mesh with meshio (format from the extension), regions as integer cell data.

    Regions are written as `region_ids[region]` (default: the region index itself) under the name the
    format reads back: "gmsh:physical" for .msh (Gmsh 2.2, which keeps physical tags), "medit:ref"
    for .mesh and "region" otherwise.
    """
    ids = mesh.regions if region_ids is None else np.asarray(region_ids)[mesh.regions]
    ids = ids.astype(np.int32)
    suffix = Path(path).suffix.lower()
    kwargs = {}
    if suffix == ".msh":
        cell_data = {"gmsh:physical": [ids], "gmsh:geometrical": [ids]}
        kwargs["file_format"] = "gmsh22"
    elif suffix == ".mesh":
        cell_data = {"medit:ref": [ids]}
    else:
        cell_data = {"region": [ids]}
    out = meshio.Mesh(mesh.vertices, [("tetra", mesh.tets)], cell_data=cell_data)
    try:
        meshio.write(os.fspath(path), out, **kwargs)
    except Exception as exc:
        raise MeshError(f"cannot write mesh {os.fspath(path)!r}: {exc}") from exc


def _write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> None:
    """Minimal Wavefront OBJ: `v x y z` lines then 1-based `f a b c` lines."""
    with open(path, "w", encoding="ascii") as fh:
        fh.write("# surface written by physics.mesh_io\n")
        np.savetxt(fh, vertices, fmt="v %.9g %.9g %.9g")
        np.savetxt(fh, triangles + 1, fmt="f %d %d %d")


def write_surface(path: str | os.PathLike, vertices: np.ndarray, triangles: np.ndarray) -> None:
    """Write a triangle surface: .obj by our own writer, anything else meshio knows (.vtu, .ply, .stl)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
        raise MeshError(f"vertices must be finite with shape (n, 3), got shape {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise MeshError(f"triangles must have shape (k, 3), got {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= vertices.shape[0]):
        raise MeshError(f"triangle indices must lie in [0, {vertices.shape[0]})")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        _write_obj(path, vertices, triangles)
        return
    if suffix not in meshio.extension_to_filetypes:
        raise MeshError(
            f"cannot write surface {str(path)!r}: unknown extension {suffix or '(none)'!r}; "
            "use .obj or a meshio format such as .vtu, .ply or .stl"
        )
    try:
        meshio.write(path, meshio.Mesh(vertices, [("triangle", triangles)]))
    except Exception as exc:
        raise MeshError(f"cannot write surface {str(path)!r}: {exc}") from exc
