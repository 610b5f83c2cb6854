"""The Model: rest shape, topology, per-tet constants and the parallel sweep order.

It changes only on topology events: burns through `remove_tets`, cuts through
`physics.topology.split_along_faces` (which appends vertices); everything per frame lives in State and Control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from physics.environment import Environment
from physics.materials import Material
from physics.mesh import TetMesh, count_inverted, signed_volumes
from physics.neo_hookean import CHUNK, LANES, rest_data, stable_lame
from physics.partitioning import chunk_plan, sweep_plan
from physics.surface import boundary_triangles, surface_after_removal, tet_neighbours

# Cuts that split tissue append vertices: a model built from a mesh may grow to this many times its vertices.
SPLIT_VERTEX_FACTOR = 2
# The cap of a Model built otherwise (or restored from a checkpoint older than the cap).
DEFAULT_VERTEX_CAP = 1_000_000

# Fully coagulated tissue is this many times stiffer than fresh tissue (before it burns through).
BURN_STIFFENING = 9.0


@dataclass
class Model:
    rest_positions: np.ndarray  # (n, 3)
    tets: np.ndarray  # (m, 4) int32; ids are stable, removed tets stay with alive = False
    regions: np.ndarray  # (m,) int32 index into materials
    materials: list[Material]
    dm_inv: np.ndarray  # (m, 9)
    rest_volume: np.ndarray  # (m,)
    alpha_dev: np.ndarray  # (m,) deviatoric compliance 1 / (mu V) of fresh tissue
    alpha_hyd: np.ndarray  # (m,) hydrostatic compliance 1 / (lambda_hat V), lambda_hat = lambda + mu
    gamma: np.ndarray  # (m,) 1 + mu / lambda_hat: the rest state is stress-free
    fixed: np.ndarray  # (n,) bool: pinned vertices
    anchor_vertex: np.ndarray  # (k,) int32: vertices tied to the fixed frame (ligaments)
    anchor_position: np.ndarray  # (k, 3)
    anchor_compliance: float  # m/N
    environment: Environment
    gravity: np.ndarray  # (3,)
    n_parts: int
    alive: np.ndarray  # (m,) bool
    mass: np.ndarray  # (n,) kg, lumped from live tets
    inv_mass: np.ndarray  # (n,) 0 for pinned and orphaned vertices
    vertex_damping: np.ndarray  # (n,) 1/s
    neighbour: np.ndarray  # (m, 4) tet across each face, -1 on the boundary (physics.surface.tet_neighbours)
    neighbour_face: np.ndarray  # (m, 4)
    n_slabs: int  # slabs of the sweep (2 per parallel task)
    order: np.ndarray  # live tet ids in sweep order (see physics.partitioning)
    sweep_keys: np.ndarray  # slab/seam group and colour of each, in sweep order
    chunks: np.ndarray  # offsets into the sweep order of runs of at most CHUNK tets of one slab and colour
    slab_chunks: np.ndarray
    sweep_alpha_dev: np.ndarray  # (live,) alpha_dev in sweep order (fresh tissue; the step applies coagulation)
    sweep_alpha_hyd: np.ndarray  # (live,) alpha_hyd in sweep order
    # The kernel's copy of the per-tet data, in blocks: chunk c's tets sit in columns chunk_slots[c] onward, and
    # each chunk is padded to a multiple of LANES columns (inert padding: no mass, Dm^-1 = 0), so the block
    # solve always runs whole SIMD vectors (see physics.neo_hookean). block_slot: the column of each tet in
    # sweep order.
    chunk_slots: np.ndarray  # (chunks + 1,)
    block_slot: np.ndarray  # (live,)
    block_corners: np.ndarray  # (4, slots) vertex ids
    block_inv_mass: np.ndarray  # (4, slots)
    block_dm_inv: np.ndarray  # (9, slots) Dm^-1, structure of arrays for the SIMD solve
    block_alpha_dev: np.ndarray  # (slots,)
    block_alpha_hyd: np.ndarray  # (slots,)
    block_gamma: np.ndarray  # (slots,)
    surface: np.ndarray  # (k, 3) outward boundary triangles of live tets
    epoch: int = 0  # bumps on every topology change
    max_vertex_speed: float = 5.0  # m/s; clamps blow-ups, far above any tissue motion
    vertex_cap: int = DEFAULT_VERTEX_CAP  # most vertices split cuts may grow the model to (then a cut is refused)
    # (k, 2) int32 (original, copy): every vertex a split cut duplicated, with its copy (the wound edges)
    wound_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))

    @property
    def n_vertices(self) -> int:
        return int(self.rest_positions.shape[0])

    @property
    def n_tets(self) -> int:
        return int(self.tets.shape[0])

    @property
    def n_live_tets(self) -> int:
        return int(self.alive.sum())

    def per_tet(self, attribute: str) -> np.ndarray:
        """A material attribute (e.g. 'strength', 'burn_rate', 'density') for every tet."""
        table = np.array([getattr(m, attribute) for m in self.materials], dtype=np.float64)
        return table[self.regions]

    def vertex_used(self) -> np.ndarray:
        """Vertices that belong to at least one live tet."""
        used = np.zeros(self.n_vertices, dtype=bool)
        used[self.tets[self.alive].ravel()] = True
        return used


def build_model(
    mesh: TetMesh,
    materials: Sequence[Material],
    fixed: np.ndarray | None = None,
    anchors: np.ndarray | None = None,
    anchor_compliance: float = 1e-4,
    environment: Environment | None = None,
    gravity: Sequence[float] = (0.0, -9.81, 0.0),
    n_parts: int = 2,
) -> Model:
    """Precompute everything the solver needs for a mesh with one material per region label.

    fixed: vertex ids pinned in place; anchors: vertex ids held to their rest position by a soft
    spring (compliance in m/N), like a ligament to the abdominal wall.
    """
    materials = list(materials)
    if int(mesh.regions.max()) >= len(materials):
        raise ValueError(f"mesh uses region {int(mesh.regions.max())} but only {len(materials)} materials given")
    if anchor_compliance <= 0 or not np.isfinite(anchor_compliance):
        raise ValueError("anchor_compliance must be positive")
    n = mesh.n_vertices
    fixed_mask = np.zeros(n, dtype=bool)
    if fixed is not None:
        fixed_mask[_vertex_ids(fixed, n, "fixed")] = True
    anchor_vertex = _vertex_ids(anchors, n, "anchors") if anchors is not None else np.zeros(0, np.int32)
    gravity_arr = np.asarray(gravity, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(gravity_arr)):
        raise ValueError("gravity must be finite")
    dm_inv, volume = rest_data(mesh.vertices, mesh.tets)
    lame = np.array([m.lame for m in materials])
    mu, lam = stable_lame(lame[mesh.regions, 0], lame[mesh.regions, 1])
    model = Model(
        rest_positions=mesh.vertices.copy(),
        tets=mesh.tets.copy(),
        regions=mesh.regions.copy(),
        materials=materials,
        dm_inv=dm_inv,
        rest_volume=volume,
        alpha_dev=1.0 / (mu * volume),
        alpha_hyd=1.0 / (lam * volume),
        gamma=1.0 + mu / lam,
        fixed=fixed_mask,
        anchor_vertex=anchor_vertex,
        anchor_position=mesh.vertices[anchor_vertex].copy(),
        anchor_compliance=float(anchor_compliance),
        environment=environment or Environment(),
        gravity=gravity_arr,
        n_parts=int(n_parts),
        alive=np.ones(mesh.n_tets, dtype=bool),
        mass=np.zeros(n),
        inv_mass=np.zeros(n),
        vertex_damping=np.zeros(n),
        neighbour=np.zeros((0, 4), np.int32),
        neighbour_face=np.zeros((0, 4), np.int8),
        n_slabs=2,
        order=np.zeros(0, np.int32),
        sweep_keys=np.zeros(0, np.int64),
        chunks=np.zeros(1, np.int64),
        slab_chunks=np.zeros(3, np.int64),
        sweep_alpha_dev=np.zeros(0),
        sweep_alpha_hyd=np.zeros(0),
        chunk_slots=np.zeros(1, np.int64),
        block_slot=np.zeros(0, np.int64),
        block_corners=np.zeros((4, 0), np.int32),
        block_inv_mass=np.zeros((4, 0)),
        block_dm_inv=np.zeros((9, 0)),
        block_alpha_dev=np.zeros(0),
        block_alpha_hyd=np.zeros(0),
        block_gamma=np.zeros(0),
        surface=np.zeros((0, 3), np.int32),
        vertex_cap=SPLIT_VERTEX_FACTOR * n,
    )
    model.neighbour, model.neighbour_face = tet_neighbours(model.tets)
    model.order, model.sweep_keys, model.n_slabs = sweep_plan(
        model.rest_positions, model.tets, model.alive, model.n_parts
    )
    _refresh(model)
    model.surface = boundary_triangles(model.tets, model.alive)
    return model


def remove_tets(model: Model, tet_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove live tets (a cut or a burn) and update what depends on topology.

    Returns (removed tet ids, surface triangles removed, surface triangles added); bumps the epoch.
    """
    ids = np.unique(np.asarray(tet_ids, dtype=np.int64))
    ids = ids[(ids >= 0) & (ids < model.n_tets)]
    ids = ids[model.alive[ids]].astype(np.int32)
    if ids.size == 0:
        return ids, np.zeros((0, 3), np.int32), np.zeros((0, 3), np.int32)
    model.alive[ids] = False
    # Slabs and colours stay valid for the tets that remain: filtering the sweep order is enough.
    still = model.alive[model.order]
    model.order, model.sweep_keys = model.order[still], model.sweep_keys[still]
    _refresh(model)
    model.surface, removed, added = surface_after_removal(
        model.surface, model.tets, model.neighbour, model.neighbour_face, ids, model.alive
    )
    model.epoch += 1
    return ids, removed, added


def relump(model: Model) -> None:
    """Masses and the kernel's blocks again after the tets' corners changed (a split cut appended vertices)."""
    _refresh(model)


def scale_stiffness(model: Model, tet_mask: np.ndarray, factor: float) -> int:
    """Make the masked tets `factor` times stiffer (both Lame parameters, so Poisson's ratio holds).

    For scenario complications such as fibrotic tissue; returns how many tets changed."""
    mask = np.asarray(tet_mask, dtype=bool)
    if mask.shape != (model.n_tets,):
        raise ValueError(f"tet_mask must have one entry per tet ({model.n_tets})")
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError("factor must be a positive finite number")
    model.alpha_dev[mask] /= factor
    model.alpha_hyd[mask] /= factor
    _refresh_compliance(model)
    return int(mask.sum())


def add_anchors(model: Model, vertex_ids: np.ndarray, positions: np.ndarray) -> int:
    """Tie more vertices to fixed points with the model's ligament compliance (e.g. an adhesion).

    Vertices already anchored are skipped; returns how many anchors were added."""
    ids = np.asarray(vertex_ids, dtype=np.int64).ravel()
    targets = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if targets.shape[0] != ids.shape[0] or not np.all(np.isfinite(targets)):
        raise ValueError("one finite position per anchored vertex is needed")
    if ids.size and (ids.min() < 0 or ids.max() >= model.n_vertices):
        raise ValueError(f"anchors: vertex ids must lie in [0, {model.n_vertices})")
    ids, first = np.unique(ids, return_index=True)
    targets = targets[first]
    new = ~np.isin(ids, model.anchor_vertex)
    model.anchor_vertex = np.concatenate([model.anchor_vertex, ids[new]]).astype(np.int32)
    model.anchor_position = np.concatenate([model.anchor_position, targets[new]])
    return int(new.sum())


def live_volume(model: Model, x: np.ndarray) -> float:
    """Total signed volume of the live tets at positions x (m^3)."""
    return float(signed_volumes(x, model.tets[model.alive]).sum())


def inverted_tets(model: Model, x: np.ndarray) -> int:
    """Live tets with det F <= 0 (signed volume <= 0) at positions x."""
    return int(count_inverted(x, model.tets, model.alive))


def _refresh(model: Model) -> None:
    """Masses and per-sweep-slot data from the live tets and the sweep order (no stale index survives)."""
    n = model.n_vertices
    live_tets = model.tets[model.alive]
    quarter = np.repeat(0.25 * model.per_tet("density")[model.alive] * model.rest_volume[model.alive], 4)
    damping = np.repeat(model.per_tet("damping")[model.alive], 4)
    corners = live_tets.ravel()
    mass = np.bincount(corners, weights=quarter, minlength=n)
    damp_weight = np.bincount(corners, weights=quarter * damping, minlength=n)
    used = np.bincount(corners, minlength=n) > 0  # counted, not mass > 0: round-off cannot keep an orphan
    safe = np.where(used, mass, 1.0)
    model.mass = np.where(used, mass, 0.0)
    model.inv_mass = np.where(used & ~model.fixed, 1.0 / safe, 0.0)
    model.vertex_damping = np.where(used, damp_weight / safe, 0.0)
    model.chunks, model.slab_chunks = chunk_plan(model.sweep_keys, model.n_slabs, CHUNK)
    counts = np.diff(model.chunks)
    model.chunk_slots = np.r_[0, np.cumsum(-(-counts // LANES) * LANES)].astype(np.int64)
    model.block_slot = np.repeat(model.chunk_slots[:-1] - model.chunks[:-1], counts) + np.arange(counts.sum())
    corners = model.tets[model.order].T
    model.block_corners = _blocks(model, corners, 0)
    model.block_inv_mass = _blocks(model, model.inv_mass[corners], 0.0)
    model.block_dm_inv = _blocks(model, model.dm_inv[model.order].T, 0.0)
    model.block_gamma = _blocks(model, model.gamma[model.order], 1.0)
    _refresh_compliance(model)


def _refresh_compliance(model: Model) -> None:
    """The compliances in sweep order and in the kernel's blocks (after _refresh or a stiffness change)."""
    model.sweep_alpha_dev = model.alpha_dev[model.order]
    model.sweep_alpha_hyd = model.alpha_hyd[model.order]
    model.block_alpha_dev = _blocks(model, model.sweep_alpha_dev, 1.0)
    model.block_alpha_hyd = _blocks(model, model.sweep_alpha_hyd, 1.0)


def _blocks(model: Model, per_tet: np.ndarray, pad: float) -> np.ndarray:
    """Per-tet data in sweep order (last axis) laid out in the kernel's padded blocks."""
    out = np.full((*per_tet.shape[:-1], int(model.chunk_slots[-1])), pad, dtype=per_tet.dtype)
    out[..., model.block_slot] = per_tet
    return out


def _vertex_ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"{what}: a boolean mask must have one entry per vertex ({n})")
        return np.flatnonzero(arr).astype(np.int32)
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{what}: vertex ids must lie in [0, {n})")
    return np.unique(arr).astype(np.int32)
