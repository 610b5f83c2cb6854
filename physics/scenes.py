"""Ready-made scenes shared by the benchmark (physics.bench), the demo (physics.demo) and the tests.

A Scene is a model, its state and a script: scripted instrument tracks (keyframed poses and jaw openings)
that give the Control for every frame, plus named phases (frame ranges) so that callers can time or
check one part of the script. Scripts are open loop and deterministic: the same scene and frame count
always produce the same inputs.

- `block_grasp_scene`: a soft tissue block (0.12 x 0.04 x 0.06 m by default) pinned at its bottom face; a
  grasper comes down on the middle of its top face, closes, and pulls up and sideways.
- `block_cantilever_scene`: the same block pinned at one end face only, sagging under gravity (a
  cantilever) for accuracy checks; the tip is the free end face.
- `liver_scene`: the procedural liver lobe resting on a table and tied to the abdominal wall along its
  top/back edge (ligament anchors); a grasper grasps the thin edge and pulls it up and back, then scissors
  come in and cut across the pulled tissue in a few snips; then both instruments withdraw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from physics.control import Control, InstrumentInput
from physics.environment import Environment
from physics.instruments import InstrumentSpec, grasper, look_rotation, scissors
from physics.materials import LIVER, VESSEL, Material
from physics.model import Model, build_model
from physics.procedural import liver_lobe, tissue_block, vertices_in_box
from physics.state import State, new_state

BLOCK_SIZE = (0.12, 0.04, 0.06)
# A soft tissue for benchmarks and accuracy checks (soft enough to sag visibly, stiff enough to hold).
SOFT_TISSUE = Material("tissue", young=3.0e4, poisson=0.45, density=1000.0)

GRASPER_ID = 0
SCISSORS_ID = 1


def block_cells(target_tets: int, size: Sequence[float] = BLOCK_SIZE) -> tuple[int, int, int]:
    """Cell counts of roughly cubic cells for a block of `size` with about `target_tets` tets (6 per cell)."""
    if target_tets < 6:
        raise ValueError(f"target_tets must be at least 6, got {target_tets}")
    size_a = np.asarray(size, dtype=np.float64)
    edge = (float(np.prod(size_a)) * 6.0 / target_tets) ** (1.0 / 3.0)
    cells = np.maximum(1, np.rint(size_a / edge)).astype(int)
    return int(cells[0]), int(cells[1]), int(cells[2])


@dataclass(frozen=True)
class Key:
    """An instrument pose at a frame: hinge position (m), shaft direction (local +z), up hint, jaw (rad)."""

    frame: int
    position: tuple[float, float, float]
    forward: tuple[float, float, float]
    jaw: float
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)


@dataclass
class Track:
    """One scripted instrument: present from its first to its last key, linear between keys."""

    id: int
    spec: InstrumentSpec
    keys: list[Key]

    def __post_init__(self) -> None:
        frames = [k.frame for k in self.keys]
        if not frames or frames != sorted(frames):
            raise ValueError(f"track {self.id}: keys must be given in frame order")

    def input(self, frame: int) -> InstrumentInput | None:
        keys = self.keys
        if frame < keys[0].frame or frame > keys[-1].frame:
            return None
        i = int(np.searchsorted([k.frame for k in keys], frame, side="right")) - 1
        a = keys[i]
        b = keys[min(i + 1, len(keys) - 1)]
        s = 0.0 if b.frame == a.frame else (frame - a.frame) / (b.frame - a.frame)

        def mix(u, v):
            return (1.0 - s) * np.asarray(u, dtype=np.float64) + s * np.asarray(v, dtype=np.float64)

        forward = mix(a.forward, b.forward)
        up = mix(a.up, b.up)
        q = look_rotation(forward, tuple(up / np.linalg.norm(up)))
        return InstrumentInput(self.id, self.spec, mix(a.position, b.position), q, float(mix(a.jaw, b.jaw)))


@dataclass
class Scene:
    """A model and state with a scripted Control per frame; phases are [start, end) frame ranges."""

    name: str
    model: Model
    state: State
    tracks: list[Track]
    n_frames: int
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def control(self, frame: int) -> Control:
        """Instrument commands for frame `frame` (0-based; the frame stepped from state.frame == frame)."""
        inputs = [t.input(frame) for t in self.tracks]
        return Control([c for c in inputs if c is not None])


# --- measurements shared by the benchmark, the demo and the tests ---------------------------------------


# --- the tissue block -----------------------------------------------------------------------------------


def block_grasp_scene(
    target_tets: int = 20_000,
    pull_frames: int = 30,
    pull: tuple[float, float, float] = (0.004, 0.008, 0.0),
    material: Material = SOFT_TISSUE,
    size: Sequence[float] = BLOCK_SIZE,
    settle_frames: int = 10,
) -> Scene:
    """A block pinned at its bottom face; a grasper grasps the top centre and pulls by `pull` (m).

    Phases: settle (no instrument), approach (the grasper comes down with its jaws open), close (the jaws
    close: the grasp takes hold), pull (the grasper moves by `pull` over `pull_frames` frames with the
    jaws closed). The grasper points straight down, 1.4 mm off the top-face vertex nearest the middle of the
    face (so even a coarse mesh has tissue between the jaws), its hinge 3 mm below the top face: the end of
    the shaft presses into the surface (instrument contact) while the jaws hold the tissue under it.
    """
    if pull_frames < 1:
        raise ValueError(f"pull_frames must be >= 1, got {pull_frames}")
    cells = block_cells(target_tets, size)
    mesh = tissue_block(size=tuple(size), cells=cells)
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(mesh, [material], fixed=fixed)
    top = float(mesh.vertices[:, 1].max())
    down = (0.0, -1.0, 0.0)
    up_hint = (0.0, 0.0, 1.0)  # jaws open in the x-y plane
    s0, a0 = settle_frames, settle_frames + 12
    c0 = a0 + 8
    end = c0 + pull_frames
    # Centre the jaws on the top-face vertex nearest the middle so that even a coarse mesh has tissue
    # between them.
    v = mesh.vertices
    on_top = np.flatnonzero(v[:, 1] >= v[:, 1].max() - 1e-9)
    centre = v[on_top[np.argmin(np.hypot(v[on_top, 0], v[on_top, 2]))]]
    hinge = (float(centre[0]) + 0.001, top - 0.003, float(centre[2]) + 0.001)
    above = (hinge[0], top + 0.03, hinge[2])
    target = tuple(float(h + d) for h, d in zip(hinge, pull, strict=True))
    track = Track(
        GRASPER_ID,
        grasper(),
        [
            Key(s0, above, down, 0.8, up_hint),
            Key(a0, hinge, down, 0.8, up_hint),
            Key(c0, hinge, down, 0.0, up_hint),
            Key(end, target, down, 0.0, up_hint),
        ],
    )
    phases = {"settle": (0, s0), "approach": (s0, a0), "close": (a0, c0), "pull": (c0, end)}
    info = {"cells": list(cells), "size_m": [float(s) for s in size], "pinned_vertices": int(fixed.size)}
    return Scene("block_grasp", model, new_state(model), [track], end, phases, info)


def block_cantilever_scene(
    target_tets: int = 5_000,
    material: Material = SOFT_TISSUE,
    size: Sequence[float] = BLOCK_SIZE,
) -> Scene:
    """The block pinned at its -x end face only: a cantilever sagging under gravity (no instrument).

    info["tip_vertices"] are the vertices of the free (+x) end face, whose mean vertical displacement is
    the tip sag.
    """
    cells = block_cells(target_tets, size)
    mesh = tissue_block(size=tuple(size), cells=cells)
    x0, x1 = float(mesh.vertices[:, 0].min()), float(mesh.vertices[:, 0].max())
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (x0 + 1e-9, np.inf, np.inf))
    tip = vertices_in_box(mesh, (x1 - 1e-9, -np.inf, -np.inf), (np.inf, np.inf, np.inf))
    model = build_model(mesh, [material], fixed=fixed)
    info = {"cells": list(cells), "size_m": [float(s) for s in size], "tip_vertices": tip}
    return Scene("block_cantilever", model, new_state(model), [], 0, {}, info)


# --- the liver lobe -------------------------------------------------------------------------------------


def _unit(v) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return float(a[0]), float(a[1]), float(a[2])


def liver_scene(resolution: float = 0.006, snips: int = 6, snip_advance: float = 0.006) -> Scene:
    """The liver lobe on a table, tied along its top/back edge; grasp the thin edge, pull, cut across.

    Timeline at 60 Hz (phases): settle; approach (the grasper comes down to the thin +x edge, jaws open
    vertically around it); grasp (the jaws close); pull (up 3 cm and back 2 cm toward the grasper's port,
    then held); scissors (scissors come in from the front, blades open); cut (`snips` snips across the
    stretched tissue, each closing the blades, then opening them and advancing `snip_advance` m toward the
    back); withdraw (the scissors leave, the grasper lets go and leaves). The cutting plane contains the
    scissors' shaft (along -z) and crosses the lifted flap where it is stretched thinnest, about 3 cm
    down the grasper's axis from its hinge.
    """
    if snips < 1:
        raise ValueError(f"snips must be >= 1, got {snips}")
    if not 0.0 < snip_advance <= 0.02:
        raise ValueError(f"snip_advance must be in (0, 0.02] m, got {snip_advance}")
    mesh = liver_lobe(resolution)
    v = mesh.vertices
    # Ligament: the upper part of the back (-z) side, tied to the abdominal wall by soft springs.
    z_back = float(v[:, 2].min())
    anchors = vertices_in_box(mesh, (-np.inf, 0.02, -np.inf), (np.inf, np.inf, z_back + 0.025))
    model = build_model(mesh, [LIVER, VESSEL], anchors=anchors, anchor_compliance=1e-4, environment=Environment.table())

    # The thin edge: the furthest +x tissue near z = 0, and its mid-height there.
    near = np.abs(v[:, 2]) < max(0.006, 1.01 * resolution)
    tip_x = float(v[near, 0].max())
    band = near & (v[:, 0] > tip_x - 0.02)
    mid_y = 0.5 * float(v[band, 1].min() + v[band, 1].max())

    g_forward = _unit((-1.0, -0.3, 0.0))
    g_up = (0.0, 0.0, 1.0)  # jaws open in the vertical x-y plane, above and below the edge
    bite = 0.010  # length of jaw over the tissue
    hinge = np.array([tip_x, mid_y, 0.0]) - np.asarray(g_forward) * (0.018 - bite)
    pull = np.array([0.02, 0.03, 0.0])
    pulled = hinge + pull

    t_settle, t_approach, t_grasp, t_pull = 20, 60, 70, 130
    t_in, t_cut = 120, 150
    close, reopen, advance = 8, 6, 6
    per_snip = close + reopen + advance
    t_cut_end = t_cut + (snips - 1) * per_snip + close
    t_out = t_cut_end + 20
    t_release = t_out + 10
    t_end = t_release + 30

    grasper_track = Track(
        GRASPER_ID,
        grasper(),
        [
            Key(t_settle, _p(hinge + np.array([0.05, 0.05, 0.0])), g_forward, 0.9, g_up),
            Key(t_approach, _p(hinge), g_forward, 0.9, g_up),
            Key(t_grasp, _p(hinge), g_forward, 0.0, g_up),
            Key(t_pull, _p(pulled), g_forward, 0.0, g_up),
            Key(t_release - 8, _p(pulled), g_forward, 0.0, g_up),
            Key(t_release, _p(pulled), g_forward, 0.9, g_up),
            Key(t_end, _p(pulled + np.array([0.04, 0.03, 0.0])), g_forward, 0.9, g_up),
        ],
    )
    # Scissors: from the front (+z) toward -z, across the stretched (thinnest) part of the lifted flap,
    # about 3 cm down the grasper's axis from its hinge. Local y, the normal of the blades' plane, runs
    # along the flap there (which rises at about 1 in 2), so the blades open across the flap's thickness.
    normal = _unit((1.0, 0.5, 0.0))
    across = np.cross(normal, (0.0, 0.0, 1.0))  # in the blades' plane, across the flap's thickness
    centre = pulled + 0.029 * np.asarray(g_forward) - np.array([0.0, 0.004, 0.0]) + 0.003 * across
    s_forward = (0.0, 0.0, -1.0)
    # The blades cut the flap's whole thickness only 9-16 mm from the hinge (where they are far enough
    # apart), so the snips advance a few mm at a time from the front of the flap.
    z_first, z_step = 0.029, float(snip_advance)
    first = centre + np.array([0.0, 0.0, z_first])
    keys = [
        Key(t_in, _p(first + np.array([0.0, 0.03, 0.06])), s_forward, 0.0, normal),
        Key(t_cut - 5, _p(first), s_forward, 1.0, normal),
        Key(t_cut, _p(first), s_forward, 1.0, normal),
    ]
    for k in range(snips):
        at = centre + np.array([0.0, 0.0, z_first - k * z_step])
        t0 = t_cut + k * per_snip
        keys.append(Key(t0 + close, _p(at), s_forward, 0.0, normal))
        if k + 1 < snips:
            keys.append(Key(t0 + close + reopen, _p(at), s_forward, 1.0, normal))
            keys.append(Key(t0 + per_snip, _p(at - np.array([0.0, 0.0, z_step])), s_forward, 1.0, normal))
    last = keys[-1].position
    keys.append(Key(t_out, _p(np.asarray(last) + np.array([0.0, 0.03, 0.08])), s_forward, 0.0, normal))
    scissors_track = Track(SCISSORS_ID, scissors(), keys)
    phases = {
        "settle": (0, t_settle),
        "approach": (t_settle, t_approach),
        "grasp": (t_approach, t_grasp),
        "pull": (t_grasp, t_pull),
        "scissors": (t_in, t_cut),
        "cut": (t_cut, t_cut_end),
        "withdraw": (t_cut_end, t_end + 1),
    }
    info = {
        "resolution_m": resolution,
        "anchors": int(anchors.size),
        "thin_edge": [tip_x, mid_y, 0.0],
        "cut_centre": _p(centre),
        "snips": snips,
    }
    return Scene("liver", model, new_state(model), [grasper_track, scissors_track], t_end + 1, phases, info)


def _p(a) -> tuple[float, float, float]:
    return float(a[0]), float(a[1]), float(a[2])
