"""Record what the state-sync codec must send, from the real engine: surface motion, instruments, topology.

    python -m physics.trace_recorder --scene liver --out liver.npz        # physics.demo's scripted liver scene
    python -m physics.trace_recorder --scene block --out block.npz        # a 20k-tet block: grasp, pull, cut, cautery

The snapshot benchmark (``netcode.sync.snapshot_bench --trace FILE``) replays such a file through the codec
without importing physics (netcode never does). A trace records what a client of a real room sees: the scene
starts settled (``physics.settle``, the function a room opens with: stepped with no instruments until the tissue
is at rest), so its first frames show tissue lying still, not falling onto the table (``--no-settle``: from the
model's rest shape, as traces were recorded before; ``info`` says which, with what settling did, and the
script's first phase, ``settle``, is then named ``rest``). The file is a numpy ``.npz`` (``TRACE_FORMAT``),
frame f being the state after f + 1 steps of 1/60 s from that start, what a server would send after stepping:

=========================  ===============  ====================================================================
``format``                 str              ``TRACE_FORMAT``
``scene``, ``info``        str              scene name; JSON of the scene's parameters (tets, phases, substeps)
``hz``                     float            frames per second (60)
``vertex_ids``             (V,) int32       every mesh vertex on the surface in any frame, ascending
``positions``              (F, V, 3) f32    their positions (m) per frame (float32: 1e-8 m at this scale)
``epoch_frame``            (E,) int32       first frame of each topology epoch (the first is 0)
``epoch_cause``            (E,) str         ``full`` (the first), ``cut`` or ``burn``
``epoch_instrument``       (E,) int32       instrument that caused it (-1: none)
``epoch_tri_offsets``      (E + 1,) int64   epoch e's surface triangles are ``epoch_triangles[o[e]:o[e+1]]``
``epoch_triangles``        (T, 3) int32     surface triangles (mesh vertex ids) of each epoch, back to back
``change_removed_offsets`` (E + 1,) int64   triangles that left the surface at the start of epoch e ...
``change_removed``         (R, 3) int32     ... (empty for the first epoch)
``change_added_offsets``   (E + 1,) int64   triangles that joined it ...
``change_added``           (A, 3) int32     ... (the whole surface for the first epoch)
``rigid_ids``              (I,) int32       instrument ids (physics' instrument ids)
``rigid_kinds``            (I,) str         grasper / scissors / cautery_hook
``rigid_present``          (F, I) bool      the instrument is in the scene that frame
``rigid_positions``        (F, I, 3) f64    hinge position (m; zeros while absent)
``rigid_orientations``     (F, I, 4) f64    unit quaternion (x, y, z, w) (the wire's order)
``rigid_jaws``             (F, I) f64       jaw opening (rad); NaN for an instrument without a jaw
``rigid_energy``           (F, I) bool      cautery pedal pressed
``grasp_frame``            (G,) int32       frames where a grasp took hold ...
``grasp_instrument``       (G,) int32       ... by which instrument ...
``grasp_point``            (G, 3) f64       ... and its hinge position then
``event_frame``            (N,) int32       every physics event (grasp, release, tear, cut, burn) ...
``event_kind``             (N,) str         ...
``event_instrument``       (N,) int32       ... (-1: none)
=========================  ===============  ====================================================================
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from physics.cli_types import positive_int
from physics.instruments import cautery_hook, scissors
from physics.scenes import SCISSORS_ID, Key, Scene, Track, block_grasp_scene, liver_scene
from physics.settle import RestTest, settled_state
from physics.solver import step

TRACE_FORMAT = "surgical-trace/1"
FRAME_DT = 1.0 / 60.0
CAUTERY_ID = 2


@dataclass
class EnergyScene:
    """A scene plus frames (per instrument id) during which that instrument's energy pedal is pressed."""

    scene: Scene
    energy: dict[int, tuple[int, int]] = field(default_factory=dict)

    def control(self, frame: int):
        control = self.scene.control(frame)
        for inst in control.instruments:
            span = self.energy.get(inst.id)
            if span is not None and span[0] <= frame < span[1]:
                inst.energy = True
        return control


def block_cut_cautery_scene(target_tets: int = 20_000) -> EnergyScene:
    """The tissue block (``block_grasp_scene``, pinned at its bottom) grasped at the top centre and pulled up
    12 mm, then three scissor snips across its top at +x (a slit along z) and a cautery hook dragged over
    its top at -x with the pedal pressed (a dwell that burns through, then a 1 cm drag); then everything lets
    go and the block springs back."""
    base = block_grasp_scene(target_tets, pull_frames=40, pull=(0.0, 0.012, 0.004))
    grasp = base.tracks[0]
    t_pull = base.n_frames
    last = grasp.keys[-1]
    t_release = t_pull + 190
    grasp.keys.extend(
        [
            Key(t_release - 8, last.position, last.forward, 0.0, last.up),
            Key(t_release, last.position, last.forward, 0.8, last.up),
            Key(t_release + 20, tuple(np.add(last.position, (0.0, 0.03, 0.0))), last.forward, 0.8, last.up),
        ]
    )
    top = float(base.model.rest_positions[:, 1].max())
    down = (0.0, -1.0, 0.0)
    # scissors: pointing down at x = +3 cm, blades opening in the y-z plane (normal +x): a slit along z
    sx, s_up = 0.03, (1.0, 0.0, 0.0)
    hinge_y = top + 0.004
    t_in = t_pull - 10
    keys = [
        Key(t_in, (sx, top + 0.04, -0.012), down, 1.0, s_up),
        Key(t_in + 15, (sx, hinge_y, -0.012), down, 1.0, s_up),
    ]
    t = t_in + 15
    for k in range(3):
        z = -0.012 + 0.008 * k
        keys.append(Key(t + 8, (sx, hinge_y, z), down, 0.0, s_up))
        t += 8
        if k < 2:
            keys.append(Key(t + 6, (sx, hinge_y, z), down, 1.0, s_up))
            keys.append(Key(t + 12, (sx, hinge_y, z + 0.008), down, 1.0, s_up))
            t += 12
    keys.append(Key(t + 15, (sx, top + 0.04, 0.004), down, 0.0, s_up))
    t_cut_end = t + 15
    # cautery: hook pointing down at x = -3 cm, its tip 1.5 mm into the top, dragged 2 cm along z
    hook = cautery_hook()
    reach, length = hook.energy_tip[0], hook.energy_tip[2]
    cx = -0.03 - reach
    cy = top + length - 0.002
    t_c = t_cut_end - 20
    c_keys = [
        Key(t_c, (cx, cy + 0.03, -0.005), down, 0.0),
        Key(t_c + 15, (cx, cy, -0.005), down, 0.0),
        Key(t_c + 90, (cx, cy, -0.005), down, 0.0),  # dwell: the tissue under the tip burns through
        Key(t_c + 150, (cx, cy, 0.005), down, 0.0),  # then drag 1 cm
        Key(t_c + 165, (cx, cy + 0.03, 0.005), down, 0.0),
    ]
    tracks = [grasp, Track(SCISSORS_ID, scissors(), keys), Track(CAUTERY_ID, hook, c_keys)]
    n_frames = max(t_release + 40, t_c + 170)
    phases = {
        **base.phases,
        "hold": (t_pull, t_release),
        "cut": (t_in + 15, t_cut_end),
        "cautery": (t_c + 15, t_c + 150),
        "release": (t_release - 8, n_frames),
    }
    scene = Scene("block_cut_cautery", base.model, base.state, tracks, n_frames, phases, dict(base.info))
    return EnergyScene(scene, {CAUTERY_ID: (t_c + 15, t_c + 150)})


def record(
    es: EnergyScene, substeps: int = 20, frames: int | None = None, progress: bool = False, settle: bool = True
) -> dict:
    """Step the scene and collect the trace arrays (see the module docstring); ``settle``: from the settled
    start (replacing the scene's state, which must be fresh), else from the scene's state as it is."""
    scene = es.scene
    model = scene.model
    settled = None
    phases = dict(scene.phases)
    if settle:
        if scene.state.frame != 0:
            raise ValueError("settle=True needs the scene's fresh state (it starts from the settled one)")
        # no time limit: a trace's start must not depend on how loaded the machine that records it is
        scene.state, settled = settled_state(model, FRAME_DT, substeps, test=RestTest(max_seconds=math.inf))
        if "settle" in phases:  # the script's first frames, before the instruments come: now at rest
            phases = {("rest" if k == "settle" else k): v for k, v in phases.items()}
    state = scene.state
    n = scene.n_frames if frames is None else min(frames, scene.n_frames)
    tracks = {t.id: t for t in scene.tracks}
    inst_ids = sorted(tracks)
    col = {iid: j for j, iid in enumerate(inst_ids)}
    n_i = len(inst_ids)
    present = np.zeros((n, n_i), bool)
    r_pos = np.zeros((n, n_i, 3))
    r_rot = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (n, n_i, 1))
    r_jaw = np.full((n, n_i), np.nan)
    r_energy = np.zeros((n, n_i), bool)
    x_frames: list[np.ndarray] = []
    on_surface = np.zeros(model.n_vertices, bool)
    on_surface[np.unique(model.surface)] = True
    origin = np.arange(model.n_vertices, dtype=np.int64)  # the vertex each one was copied from (itself at first)
    epochs = [(0, "full", -1, model.surface.copy(), np.zeros((0, 3), np.int32), model.surface.copy())]
    events: list[tuple[int, str, int]] = []
    grasps: list[tuple[int, int, np.ndarray]] = []
    t0 = time.perf_counter()
    for f in range(n):
        control = es.control(f)
        report = step(model, state, control, FRAME_DT, substeps)
        for inst in control.instruments:
            j = col[inst.id]
            present[f, j] = True
            r_pos[f, j] = inst.position
            q = np.asarray(inst.orientation, np.float64)
            r_rot[f, j] = q[[1, 2, 3, 0]] / np.linalg.norm(q)
            if inst.spec.has_jaw:
                r_jaw[f, j] = inst.jaw
            r_energy[f, j] = inst.energy
        x_frames.append(state.x.astype(np.float32))
        if report.topology:
            removed = np.concatenate(
                [np.asarray(c.removed_triangles, np.int32).reshape(-1, 3) for c in report.topology]
            )
            added = np.concatenate([np.asarray(c.added_triangles, np.int32).reshape(-1, 3) for c in report.topology])
            last = report.topology[-1]
            cause = last.cause if last.cause in ("cut", "burn") else "cut"
            inst = -1 if last.instrument is None else int(last.instrument)
            epochs.append((f, cause, inst, model.surface.copy(), removed, added))
            for c in report.topology:  # split cuts append vertices, each a copy of an older one
                origin = np.concatenate([origin, np.asarray(c.new_vertices, np.int64)])
            on_surface = np.concatenate([on_surface, np.zeros(model.n_vertices - on_surface.size, bool)])
            on_surface[np.unique(model.surface)] = True
        for e in report.events:
            if e.kind in ("grasp", "release", "tear", "cut", "burn"):
                events.append((f, e.kind, -1 if e.instrument is None else int(e.instrument)))
            if e.kind == "grasp" and e.instrument in col:
                grasps.append((f, int(e.instrument), r_pos[f, col[e.instrument]].copy()))
        if progress and (f % 20 == 0 or f == n - 1):
            print(f"  frame {f + 1}/{n}  {time.perf_counter() - t0:.0f} s  epochs {len(epochs)}", file=sys.stderr)
    ids = np.flatnonzero(on_surface).astype(np.int32)
    positions = np.stack([x[_existing(ids, origin, len(x))] for x in x_frames])

    def packed(k: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = [np.asarray(e[k], np.int32).reshape(-1, 3) for e in epochs]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        return offsets, np.concatenate(arrays)

    tri_off, tris = packed(3)
    rem_off, rem = packed(4)
    add_off, add = packed(5)
    info = {
        **{k: v for k, v in scene.info.items() if isinstance(v, int | float | str | list)},
        "tets": int(model.n_tets),
        "mesh_vertices": int(model.n_vertices),
        "substeps": substeps,
        "phases": phases,
        "settled": None if settled is None else settled.summary(),
        "record_seconds": round(time.perf_counter() - t0, 1),
    }
    return {
        "format": np.array(TRACE_FORMAT),
        "scene": np.array(scene.name),
        "info": np.array(json.dumps(info)),
        "hz": np.array(1.0 / FRAME_DT),
        "vertex_ids": ids,
        "positions": positions,
        "epoch_frame": np.array([e[0] for e in epochs], np.int32),
        "epoch_cause": np.array([e[1] for e in epochs]),
        "epoch_instrument": np.array([e[2] for e in epochs], np.int32),
        "epoch_tri_offsets": tri_off,
        "epoch_triangles": tris,
        "change_removed_offsets": rem_off,
        "change_removed": rem,
        "change_added_offsets": add_off,
        "change_added": add,
        "rigid_ids": np.array(inst_ids, np.int32),
        "rigid_kinds": np.array([str(tracks[i].spec.kind) for i in inst_ids]),
        "rigid_present": present,
        "rigid_positions": r_pos,
        "rigid_orientations": r_rot,
        "rigid_jaws": r_jaw,
        "rigid_energy": r_energy,
        "grasp_frame": np.array([g[0] for g in grasps], np.int32),
        "grasp_instrument": np.array([g[1] for g in grasps], np.int32),
        "grasp_point": np.array([g[2] for g in grasps], np.float64).reshape(-1, 3),
        "event_frame": np.array([e[0] for e in events], np.int32),
        "event_kind": np.array([e[1] for e in events] or [""])[: len(events)],
        "event_instrument": np.array([e[2] for e in events], np.int32),
    }


def _existing(ids: np.ndarray, origin: np.ndarray, count: int) -> np.ndarray:
    """ids with each vertex a later split appended replaced by the vertex it copies among the first ``count``
    (a frame before the split: both sides were one vertex there)."""
    ids = ids.astype(np.int64, copy=True)
    late = ids >= count
    while late.any():
        ids[late] = origin[ids[late]]
        late = ids >= count
    return ids


SCENES = {
    "liver": lambda args: EnergyScene(liver_scene(args.resolution)),
    "block": lambda args: block_cut_cautery_scene(args.tets),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m physics.trace_recorder", description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", choices=sorted(SCENES), default="liver")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    p.add_argument("--frames", type=positive_int, default=None, help="frames to record (default: the whole script)")
    p.add_argument("--substeps", type=positive_int, default=20, help="XPBD substeps per frame (20)")
    p.add_argument("--resolution", type=float, default=0.006, help="liver voxel size, m (0.006, as physics.demo)")
    p.add_argument("--tets", type=positive_int, default=20_000, help="block scene: target tet count (20000)")
    p.add_argument("--no-settle", action="store_true", help="start from the model's rest shape, not settled")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    es = SCENES[args.scene](args)
    if not args.quiet:
        m = es.scene.model
        print(f"recording {es.scene.name}: {m.n_tets} tets, {es.scene.n_frames} frames -> {args.out}", file=sys.stderr)
    arrays = record(es, args.substeps, args.frames, progress=not args.quiet, settle=not args.no_settle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)  # atomic: a cached trace is never half written
    if not args.quiet:
        e = arrays["epoch_cause"]
        settled = json.loads(str(arrays["info"]))["settled"]
        start = "from the rest shape" if settled is None else f"settled in {settled['frames']} frames"
        print(
            f"wrote {args.out}: {start}, {len(arrays['vertex_ids'])} surface vertices, "
            f"{len(arrays['positions'])} frames, "
            f"{len(e) - 1} topology changes ({', '.join(e[1:].tolist()) or 'none'})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
