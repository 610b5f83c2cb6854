"""Surface extraction and topology queries on tet meshes (what the renderer and cutting code need).

All functions work on index arrays only, are vectorised with numpy, and give deterministic output so
that every client of a room extracts the same surface after a cut.
"""

from __future__ import annotations

import numpy as np

from physics.mesh import MeshError

# Faces of a positively oriented tet (0, 1, 2, 3), each counter-clockwise seen from outside:
# the normal (b - a) x (c - a) points away from the opposite corner.
TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)


def _check_tets(tets: np.ndarray, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    tets = np.asarray(tets)
    if tets.ndim != 2 or tets.shape[1] != 4:
        raise MeshError(f"tets must have shape (m, 4), got {tets.shape}")
    if tets.size and tets.min() < 0:
        raise MeshError("tet indices must be >= 0")
    if alive is None:
        alive = np.ones(tets.shape[0], dtype=bool)
    else:
        alive = np.asarray(alive, dtype=bool)
        if alive.shape != (tets.shape[0],):
            raise MeshError(f"alive must have one flag per tet ({tets.shape[0]}), got shape {alive.shape}")
    return tets.astype(np.int64, copy=False), alive


def triangle_keys(triangles: np.ndarray, n: int) -> np.ndarray:
    """One int64 key per triangle, invariant to vertex order (n = an upper bound on vertex ids)."""
    s = np.sort(triangles.astype(np.int64, copy=False), axis=1)
    if n >= 2**21:  # n**3 would overflow int64: fall back to a row view (slower, still exact)
        s = np.ascontiguousarray(s)
        return s.view(np.dtype((np.void, s.dtype.itemsize * 3))).ravel()
    return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]


def boundary_triangles(tets: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
    """Faces that belong to exactly one alive tet, as (k, 3) int32, oriented outward.

    Tets must be positively oriented (as TetMesh guarantees). Triangles are ordered by their sorted
    vertex ids, so the output only depends on the set of alive tets.
    """
    tets, alive = _check_tets(tets, alive)
    live = tets[alive]
    if live.shape[0] == 0:
        return np.zeros((0, 3), dtype=np.int32)
    faces = live[:, TET_FACES].reshape(-1, 3)
    keys = triangle_keys(faces, int(live.max()) + 1)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return faces[first[counts == 1]].astype(np.int32)


def tet_neighbours(tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour, neighbour_face), each (m, 4): the tet across face f of tet t (-1 on the boundary) and
    that face's index in the neighbour, with faces as in TET_FACES."""
    tets, _ = _check_tets(tets, None)
    m = tets.shape[0]
    faces = tets[:, TET_FACES].reshape(-1, 3)  # row 4 t + f
    keys = triangle_keys(faces, int(tets.max(initial=0)) + 1)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    same = k[1:] == k[:-1]
    a, b = order[:-1][same], order[1:][same]
    neighbour = np.full(4 * m, -1, dtype=np.int32)
    neighbour_face = np.full(4 * m, -1, dtype=np.int8)
    neighbour[a], neighbour[b] = b // 4, a // 4
    neighbour_face[a], neighbour_face[b] = b % 4, a % 4
    return neighbour.reshape(m, 4), neighbour_face.reshape(m, 4)


def surface_after_removal(
    surface: np.ndarray,
    tets: np.ndarray,
    neighbour: np.ndarray,
    neighbour_face: np.ndarray,
    removed: np.ndarray,
    alive: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Update a boundary surface after `removed` tets died (alive is already updated).

    Only the removed tets' faces change: those that were on the surface leave it, those shared with a
    surviving neighbour join it (as that neighbour's outward face). Returns (surface, left, joined);
    the surface equals boundary_triangles(tets, alive), order included, at a fraction of its cost.
    """
    removed = np.asarray(removed, dtype=np.int64)
    nb = neighbour[removed].astype(np.int64)
    nb_face = neighbour_face[removed].astype(np.int64)
    alive_before = alive.copy()
    alive_before[removed] = True
    had_neighbour = (nb >= 0) & alive_before[np.maximum(nb, 0)]
    keeps_neighbour = (nb >= 0) & alive[np.maximum(nb, 0)]
    left = tets[removed][:, TET_FACES][~had_neighbour].reshape(-1, 3)
    joined = tets[nb[keeps_neighbour]][
        np.arange(int(keeps_neighbour.sum()))[:, None], TET_FACES[nb_face[keeps_neighbour]]
    ]
    n = int(tets.max(initial=0)) + 1
    keep = ~np.isin(triangle_keys(surface, n), triangle_keys(left, n))
    merged = np.concatenate([surface[keep], joined]).reshape(-1, 3)
    merged = merged[np.argsort(triangle_keys(merged, n), kind="stable")]
    return merged.astype(np.int32), left.astype(np.int32), joined.astype(np.int32)


def triangle_diff(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(removed, added): triangles of `old` missing from `new` and of `new` missing from `old`.

    Triangles are compared as sets of vertex ids (orientation and rotation do not matter); each
    returned triangle keeps the vertex order it had in its own input.
    """
    old = np.asarray(old).reshape(-1, 3)
    new = np.asarray(new).reshape(-1, 3)
    n = 1 + max(int(old.max(initial=0)), int(new.max(initial=0)))
    k_old, k_new = triangle_keys(old, n), triangle_keys(new, n)
    removed = old[~np.isin(k_old, k_new)]
    added = new[~np.isin(k_new, k_old)]
    return removed.astype(np.int32), added.astype(np.int32)


def triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit normal (right-hand rule) of each triangle; zero for degenerate triangles (never NaN)."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def graph_components(n_nodes: int, u: np.ndarray, v: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of an undirected graph given as edge lists: (count, label per node).

    Vectorised union-find (hooking of roots onto the smaller root, then pointer jumping), which
    converges in a few dozen numpy passes even for long chains. Labels are numbered in order of
    each component's smallest node id.
    """
    u = np.asarray(u, dtype=np.int64).ravel()
    v = np.asarray(v, dtype=np.int64).ravel()
    parent = np.arange(n_nodes, dtype=np.int64)
    while True:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not np.any(differ):
            break
        lo = np.minimum(ru[differ], rv[differ])
        hi = np.maximum(ru[differ], rv[differ])
        np.minimum.at(parent, hi, lo)  # hi is a root: hook it below a smaller root
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    roots, labels = np.unique(parent, return_inverse=True)
    return int(roots.size), labels.astype(np.int64)


def connected_components(tets: np.ndarray, alive: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """Number of pieces among the alive tets, and a piece label per tet (-1 for dead tets).

    Two tets are connected when they share at least one vertex. Labels are 0..count-1 numbered in
    order of each piece's first alive tet.
    """
    tets, alive = _check_tets(tets, alive)
    labels = np.full(tets.shape[0], -1, dtype=np.int64)
    live = tets[alive]
    if live.shape[0] == 0:
        return 0, labels
    n = int(live.max()) + 1
    u = np.repeat(live[:, :1], 3, axis=1)
    _, vertex_label = graph_components(n, u, live[:, 1:])
    piece = vertex_label[live[:, 0]]
    _, first, inverse = np.unique(piece, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    labels[alive] = rank[inverse]
    return int(first.size), labels
