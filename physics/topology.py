"""Topology changes: the records of what a cut or a burn changed (compact enough to send to every headset), and
splitting a model along faces (the scissors' face-aligned incision)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics.model import Model, relump
from physics.state import State
from physics.surface import TET_FACES, graph_components, triangle_diff, triangle_keys


@dataclass(frozen=True)
class TopologyChange:
    """epoch: the model's topology epoch after the change; cause: "cut" or "burn"; removed_tets: stable
    tet ids; removed/added_triangles: surface triangles (vertex ids) that left or joined the surface;
    new_vertices: for each vertex a split cut appended (ids first_new, first_new + 1, ... in order, with
    first_new = the vertex count before the cut), the vertex it was copied from (its wound-edge partner)."""

    epoch: int
    cause: str
    instrument: int | None
    removed_tets: np.ndarray
    removed_triangles: np.ndarray
    added_triangles: np.ndarray
    new_vertices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    first_new: int = 0

    def to_message(self) -> dict:
        """Plain types for msgpack: arrays as little-endian int32 bytes."""
        return {
            "epoch": self.epoch,
            "cause": self.cause,
            "instrument": self.instrument,
            "removed_tets": self.removed_tets.astype("<i4").tobytes(),
            "removed_triangles": self.removed_triangles.astype("<i4").tobytes(),
            "added_triangles": self.added_triangles.astype("<i4").tobytes(),
            "new_vertices": self.new_vertices.astype("<i4").tobytes(),
            "first_new": self.first_new,
        }

    @classmethod
    def from_message(cls, msg: dict) -> TopologyChange:
        """Inverse of to_message; anything malformed (wrong types, missing fields, partial or negative
        ids) raises ValueError, so a bad packet never reaches a client's mesh."""
        if not isinstance(msg, dict):
            raise ValueError("topology change: message must be a map")

        def field(key: str):
            if key not in msg:
                raise ValueError(f"topology change: missing {key}")
            return msg[key]

        def integer(key: str) -> int:
            value = field(key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"topology change: {key} must be an integer")
            return int(value)

        def arr(key: str, width: int) -> np.ndarray:
            raw = field(key)
            if not isinstance(raw, bytes | bytearray) or len(raw) % (4 * width):
                raise ValueError(f"topology change: {key} must be int32 bytes in groups of {width}")
            out = np.frombuffer(raw, dtype="<i4").reshape(-1, width).squeeze(axis=1 if width == 1 else ())
            if out.size and out.min() < 0:
                raise ValueError(f"topology change: {key} holds negative ids")
            return out

        cause = field("cause")
        if not isinstance(cause, str):
            raise ValueError("topology change: cause must be a string")
        return cls(
            epoch=integer("epoch"),
            cause=cause,
            instrument=None if msg.get("instrument") is None else integer("instrument"),
            removed_tets=arr("removed_tets", 1),
            removed_triangles=arr("removed_triangles", 3),
            added_triangles=arr("added_triangles", 3),
            new_vertices=arr("new_vertices", 1) if "new_vertices" in msg else np.zeros(0, np.int32),
            first_new=integer("first_new") if "first_new" in msg else 0,
        )


@dataclass(frozen=True)
class Split:
    """What split_along_faces did: the faces opened (tet, face) and the vertices it appended (their source ids,
    new id = first_new + i), with the surface triangles that left and joined the surface."""

    faces: np.ndarray  # (f, 2) int32 (tet, face index as in physics.surface.TET_FACES), the side of the lower tet
    first_new: int
    sources: np.ndarray  # (k,) int32
    removed_triangles: np.ndarray
    added_triangles: np.ndarray


class VertexCapError(ValueError):
    """A split would grow the model past its vertex cap (model.vertex_cap); nothing was changed."""


def split_along_faces(model: Model, state: State, tet_faces: np.ndarray) -> Split:
    """Open the model along interior faces (tet, face index) so the tissue separates there with no gap and no
    tet lost: a face-aligned incision.

    Each vertex on an opened face is given one copy per piece of its star (the live tets around it that still
    connect through shared, unopened faces): the piece holding the vertex's lowest tet keeps the id, the others
    get new ids appended after the last vertex (rest and current position, velocity, pinning and anchor copied),
    so the two sides move apart. Where an opened face's corners all stay shared (the tip of the incision) it is
    closed again. Tets keep their ids, rest shapes and materials, so volume and mass are unchanged (masses are
    lumped again from the tets). Raises VertexCapError, changing nothing, when the copies would pass
    model.vertex_cap. Faces that are boundary, dead or repeated are ignored; the epoch bumps only on a change."""
    tf = np.asarray(tet_faces, dtype=np.int64).reshape(-1, 2)
    if tf.size and (tf[:, 0].min() < 0 or tf[:, 0].max() >= model.n_tets or tf[:, 1].min() < 0 or tf[:, 1].max() > 3):
        raise ValueError("tet_faces: (tet, face) pairs with tet in [0, n_tets) and face in 0..3")
    nb, nbf, alive = model.neighbour, model.neighbour_face, model.alive
    t, f = tf[:, 0], tf[:, 1]
    u = nb[t, f].astype(np.int64)
    ok = (u >= 0) & alive[t] & alive[np.maximum(u, 0)]
    t, f, u = t[ok], f[ok], u[ok]
    g = nbf[t, f].astype(np.int64)
    lower = t < u  # one row per face, from the side of its lower tet
    t, f, u, g = np.where(lower, t, u), np.where(lower, f, g), np.where(lower, u, t), np.where(lower, g, f)
    _, first = np.unique(4 * t + f, return_index=True)
    t, f, u, g = t[first], f[first], u[first], g[first]
    n0 = model.n_vertices
    empty = Split(np.zeros((0, 2), np.int32), n0, np.zeros(0, np.int32), *(np.zeros((0, 3), np.int32),) * 2)
    if t.size == 0:
        return empty

    # Stars of the opened faces' vertices, as (vertex, tet, corner) incidences sorted by vertex then tet.
    cand = np.unique(model.tets[t[:, None], TET_FACES[f]])
    live_ids = np.flatnonzero(alive)
    corners = model.tets[live_ids]
    hit = np.isin(corners, cand)
    inc_t, inc_c = live_ids[np.nonzero(hit)[0]], np.nonzero(hit)[1]
    inc_v = corners[hit].astype(np.int64)
    order = np.lexsort((inc_t, inc_v))
    inc_t, inc_c, inc_v = inc_t[order], inc_c[order], inc_v[order]
    keys = inc_v * model.n_tets + inc_t

    # Pieces of each star: incidences joined across the faces that contain the vertex and stay shared.
    opened = np.zeros((model.n_tets, 4), dtype=bool)
    opened[t, f] = opened[u, g] = True
    src, dst = [], []
    for face in range(4):
        other = nb[inc_t, face].astype(np.int64)
        join = (inc_c != face) & (other >= 0) & ~opened[inc_t, face]
        join &= alive[np.maximum(other, 0)]
        at = np.searchsorted(keys, inc_v[join] * model.n_tets + other[join])
        src.append(np.flatnonzero(join))
        dst.append(at)
    _, piece = graph_components(keys.size, np.concatenate(src), np.concatenate(dst))
    # A vertex's first incidence (its lowest tet) names the piece that keeps the id; every other piece of that
    # vertex gets a new id, numbered by vertex and then by the piece's lowest tet.
    starts = np.r_[0, np.flatnonzero(np.diff(inc_v)) + 1]
    keeper = np.repeat(piece[starts], np.diff(np.r_[starts, inc_v.size]))
    moves = piece != keeper
    uniq_piece, first_inc = np.unique(piece[moves], return_index=True)
    first_inc = np.flatnonzero(moves)[first_inc]
    rank = np.argsort(first_inc, kind="stable")  # incidences are in (vertex, tet) order
    new_of_piece = np.empty(uniq_piece.size, np.int64)
    new_of_piece[rank] = n0 + np.arange(uniq_piece.size)
    sources = inc_v[first_inc[rank]].astype(np.int32)
    if n0 + sources.size > model.vertex_cap:
        raise VertexCapError(
            f"cut refused: {sources.size} new vertices would pass the model's cap of {model.vertex_cap} (it has {n0})"
        )

    if sources.size == 0:
        return empty
    affected = np.unique(inc_t)
    before = _boundary_faces(model.tets, nb, alive, affected)
    new_tets = model.tets.copy()
    new_tets[inc_t[moves], inc_c[moves]] = new_of_piece[np.searchsorted(uniq_piece, piece[moves])]
    # Faces whose corners all stayed shared did not open (the incision's tip): glue them again.
    side_a = np.sort(new_tets[t[:, None], TET_FACES[f]], axis=1)
    side_b = np.sort(new_tets[u[:, None], TET_FACES[g]], axis=1)
    apart = (side_a != side_b).any(axis=1)
    t, f, u, g = t[apart], f[apart], u[apart], g[apart]
    model.tets = new_tets
    model.neighbour = nb.copy()
    model.neighbour_face = nbf.copy()
    model.neighbour[t, f] = model.neighbour[u, g] = -1
    model.neighbour_face[t, f] = model.neighbour_face[u, g] = -1
    after = _boundary_faces(model.tets, model.neighbour, alive, affected)
    removed, added = triangle_diff(before, after)

    model.rest_positions = np.concatenate([model.rest_positions, model.rest_positions[sources]])
    model.fixed = np.concatenate([model.fixed, model.fixed[sources]])
    anchored = np.isin(sources, model.anchor_vertex)
    if anchored.any():
        where = np.searchsorted(model.anchor_vertex, sources[anchored], sorter=np.argsort(model.anchor_vertex))
        at = np.argsort(model.anchor_vertex)[where]
        model.anchor_vertex = np.concatenate([model.anchor_vertex, n0 + np.flatnonzero(anchored)]).astype(np.int32)
        model.anchor_position = np.concatenate([model.anchor_position, model.anchor_position[at]])
    pairs = np.stack([sources, n0 + np.arange(sources.size, dtype=np.int32)], axis=1).astype(np.int32)
    model.wound_pairs = np.concatenate([model.wound_pairs, pairs])
    state.x = np.concatenate([state.x, state.x[sources]])
    state.v = np.concatenate([state.v, state.v[sources]])
    relump(model)
    n = model.n_vertices
    keep = ~np.isin(triangle_keys(model.surface, n), triangle_keys(removed, n))
    merged = np.concatenate([model.surface[keep], added]).reshape(-1, 3)
    model.surface = merged[np.argsort(triangle_keys(merged, n), kind="stable")].astype(np.int32)
    model.epoch += 1
    faces = np.stack([t, f], axis=1).astype(np.int32)
    return Split(faces, n0, sources, removed, added)


def _boundary_faces(tets: np.ndarray, neighbour: np.ndarray, alive: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The outward boundary faces (k, 3) of the tets `ids` (no live tet across them), faces in TET_FACES order."""
    across = neighbour[ids].astype(np.int64)
    open_face = (across < 0) | ~alive[np.maximum(across, 0)]
    rows, faces = np.nonzero(open_face)
    return tets[ids[rows][:, None], TET_FACES[faces]].astype(np.int32)
